//! A reqwest client with `ProcoreAuthMiddleware`.
//!
//! `cargo run --example reqwest_client` (local emulator), or with
//! `-- --procore-env sandbox` and `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set,
//! after `installed_app` has saved a token.

use procore_auth_examples::{call_me_across_an_expiry, target_from_args, user_manager};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use reqwest_middleware::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    let manager = user_manager(&target, ReqwestTransport::new()?).await?;
    let client = ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
        .with(ProcoreAuthMiddleware::new(manager.clone()))
        .build();

    call_me_across_an_expiry(&target, &client, &manager).await?;
    Ok(())
}
