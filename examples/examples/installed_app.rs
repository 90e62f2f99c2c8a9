//! An installed (desktop or CLI) app: the authorization-code flow with Procore's
//! out-of-band redirect, the token saved to a `FileStore` (mode 0600) and reused on
//! the next run.
//!
//! `cargo run --example installed_app -- --procore-env sandbox` with
//! `PROCORE_CLIENT_ID` / `PROCORE_CLIENT_SECRET` set: open the printed URL, approve,
//! paste the code shown by Procore. The token is saved to `PROCORE_TOKEN_FILE`
//! (default `procore-token.json`); the next run uses it without asking.
//!
//! Without `--procore-env` it runs against the local emulator: the browser step is
//! done by following the emulator's redirect to `http://localhost`, and the "next
//! run" is simulated by a second manager that starts from the saved file.

use std::io::BufRead;

use procore_auth_core::{
    AuthorizationCode, FileStore, RefreshTokenGrant, TokenManager, TokenStore,
    OUT_OF_BAND_REDIRECT_URI,
};
use procore_auth_examples::{target_from_args, token_file, Target};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use reqwest_middleware::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = target_from_args().await?;
    let path = match &target.emulator {
        // A fresh emulator knows none of a previous run's tokens.
        Some(_) => {
            std::env::temp_dir().join(format!("procore-auth-demo-{}.json", std::process::id()))
        }
        None => token_file(),
    };
    let store = FileStore::new(&path);
    let transport = ReqwestTransport::new()?;

    if store.load().await?.is_none() {
        let code = authorize(&target).await?;
        let redirect_uri = redirect_uri(&target);
        let token = target
            .oauth
            .exchange_code(&transport, &code, redirect_uri)
            .await?;
        store.save(&token, None).await?;
        println!("authorized; token saved to {}", path.display());
    } else {
        println!("reusing the token saved in {}", path.display());
    }

    // This is all a later run needs: the store. Refreshed tokens are written back
    // to it before they are used.
    let manager = TokenManager::builder(RefreshTokenGrant::new(target.oauth.clone(), transport))
        .store(store)
        .build();
    let client = ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
        .with(ProcoreAuthMiddleware::new(manager))
        .build();
    let response = client
        .get(format!("{}/rest/v1.0/me", target.api_base()))
        .send()
        .await?;
    println!(
        "GET /rest/v1.0/me -> {}: {}",
        response.status(),
        response.text().await?
    );

    if target.emulator.is_some() {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

fn redirect_uri(target: &Target) -> &'static str {
    if target.emulator.is_some() {
        "http://localhost"
    } else {
        OUT_OF_BAND_REDIRECT_URI
    }
}

/// Sends the user to Procore and returns the authorization code.
async fn authorize(target: &Target) -> Result<AuthorizationCode, Box<dyn std::error::Error>> {
    let attempt = target.oauth.authorization_request(redirect_uri(target));
    if target.emulator.is_none() {
        println!(
            "Open this URL, approve the app, and paste the code Procore shows:\n\n  {}\n",
            attempt.url()
        );
        let mut code = String::new();
        std::io::stdin().lock().read_line(&mut code)?;
        return Ok(AuthorizationCode::new(code.trim()));
    }
    // The emulator approves at once and redirects to http://localhost/?code=…&state=…;
    // a browser would follow it, we read it and check the state.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = no_redirects.get(attempt.url()).send().await?;
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .ok_or("the authorize endpoint did not redirect")?
        .to_str()?;
    Ok(attempt.verify_redirect(location)?)
}
