//! A hyper-util client behind `ProcoreAuthLayer`.
//!
//! `cargo run --example tower_stack` (local emulator), or with
//! `-- --procore-env sandbox` and `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set,
//! after `installed_app` has saved a token.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_examples::{target_from_args, user_manager};
use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    // Real Procore needs TLS: hyper-util with a TLS connector (e.g. hyper-rustls).
    // This example uses plain HTTP, which is what the local emulator speaks.
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // Token calls go through the same client, unwrapped.
    let manager = user_manager(&target, TowerTransport::new(http.clone())).await?;
    let procore = ProcoreAuthLayer::new(manager.clone()).layer(http);

    let request = http::Request::get(format!("{}/rest/v1.0/me", target.api_base()))
        .body(Full::new(Bytes::new()))?;
    let response = procore.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET /rest/v1.0/me -> {status}: {}",
        String::from_utf8_lossy(&body)
    );

    if let Some(emulator) = &target.emulator {
        emulator.expire_all_tokens();
        let request = http::Request::get(format!("{}/rest/v1.0/me", target.api_base()))
            .body(Full::new(Bytes::new()))?;
        let status = procore.oneshot(request).await?.status();
        println!("after the emulator expired every token -> {status} (refreshed and replayed)");
    }
    println!("metrics: {:?}", manager.metrics());
    Ok(())
}
