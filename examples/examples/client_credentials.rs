//! A service account (Developer Managed Service Account): tokens come from the
//! client-credentials grant, with no user and no refresh token.
//!
//! `cargo run --example client_credentials` (local emulator), or with
//! `-- --procore-env sandbox` and `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set.
//! Service-account calls need a company: set `PROCORE_COMPANY_ID` for real Procore.

use procore_auth_core::{ClientCredentialsGrant, RequestPolicy, TokenManager};
use procore_auth_examples::{call_me_across_an_expiry, target_from_args};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use reqwest_middleware::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    let mut policy = RequestPolicy::new(target.oauth.environment());
    if let Ok(company) = std::env::var("PROCORE_COMPANY_ID") {
        policy = policy.with_company_id(company.parse()?);
    }
    let grant = ClientCredentialsGrant::new(target.oauth.clone(), ReqwestTransport::new()?);
    let manager = TokenManager::builder(grant).request_policy(policy).build();
    let client = ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
        .with(ProcoreAuthMiddleware::new(manager.clone()))
        .build();

    call_me_across_an_expiry(&target, &client, &manager).await?;
    Ok(())
}
