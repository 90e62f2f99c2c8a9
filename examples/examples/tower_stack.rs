//! A hyper-util client behind `ProcoreAuthLayer`.
//!
//! `cargo run --example tower_stack` (local emulator), or with
//! `-- --procore-env sandbox` and `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set,
//! after `installed_app` has saved a token.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_examples::{target_from_args, user_manager};
use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    // TLS for real Procore (with the platform's certificate verifier); plain HTTP is
    // allowed too, for the local emulator.
    let connector = HttpsConnectorBuilder::new()
        .with_platform_verifier()
        .https_or_http()
        .enable_http1()
        .build();
    let http = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    // Token calls go through the same client, unwrapped (with TowerTransport's
    // default 30 s timeout).
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
