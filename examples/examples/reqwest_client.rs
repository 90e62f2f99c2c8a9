//! A reqwest client with `ProcoreAuthMiddleware`.
//!
//! `cargo run --example reqwest_client` (local emulator), or with
//! `-- --procore-env sandbox` and `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set,
//! after `installed_app` has saved a token.

use procore_auth_examples::{target_from_args, user_manager};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use reqwest_middleware::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    let manager = user_manager(&target, ReqwestTransport::new()?).await?;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ProcoreAuthMiddleware::new(manager.clone()))
        .build();

    let me = format!("{}/rest/v1.0/me", target.api_base());
    let response = client.get(&me).send().await?;
    println!(
        "GET /rest/v1.0/me -> {}: {}",
        response.status(),
        response.text().await?
    );

    if let Some(emulator) = &target.emulator {
        emulator.expire_all_tokens();
        let status = client.get(&me).send().await?.status();
        println!("after the emulator expired every token -> {status} (refreshed and replayed)");
    }
    println!("metrics: {:?}", manager.metrics());
    Ok(())
}
