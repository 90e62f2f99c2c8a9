//! Shared setup for the examples in `examples/`: which Procore to talk to, and with
//! which credentials.
//!
//! Every example takes `--procore-env sandbox|production|monthly-sandbox|federal|URL`.
//! Without it, the example starts the local emulator from `procore-auth-testkit` and
//! needs no account. Against a real environment, credentials come from the
//! `PROCORE_CLIENT_ID` and `PROCORE_CLIENT_SECRET` environment variables.
#![forbid(unsafe_code)]

// The README's examples compile as doctests here, where every crate they use is a
// dependency.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

use procore_auth_core::{ClientSecret, Environment, OAuthClient};
use procore_auth_testkit::Emulator;

/// Where an example runs.
#[derive(Debug)]
pub struct Target {
    /// The OAuth client for the chosen environment and credentials.
    pub oauth: OAuthClient,
    /// The local emulator, when no real environment was chosen (kept alive here).
    pub emulator: Option<Emulator>,
}

impl Target {
    /// The API base URL, e.g. `https://api.procore.com`.
    pub fn api_base(&self) -> &str {
        self.oauth.environment().api_base()
    }
}

/// Reads `--procore-env` from the command line; starts the emulator if absent.
///
/// # Errors
///
/// A message for the user if the flag or the credentials are missing or invalid.
pub async fn target_from_args() -> Result<Target, String> {
    let mut args = std::env::args().skip(1);
    let mut chosen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--procore-env" => chosen = Some(args.next().ok_or("--procore-env needs a value")?),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; try --procore-env sandbox"
                ))
            }
        }
    }
    let Some(chosen) = chosen else {
        let emulator = Emulator::start().await;
        let oauth = OAuthClient::new(
            Environment::custom(&emulator.base_url()).map_err(|e| e.to_string())?,
            emulator.client_id(),
            ClientSecret::new(emulator.client_secret()),
        );
        println!(
            "(no --procore-env: using the local emulator at {})",
            emulator.base_url()
        );
        return Ok(Target {
            oauth,
            emulator: Some(emulator),
        });
    };
    let environment: Environment = chosen.parse().map_err(|e| format!("--procore-env: {e}"))?;
    let variable = |name: &str| {
        std::env::var(name).map_err(|_| format!("set {name} to use --procore-env {chosen}"))
    };
    let oauth = OAuthClient::new(
        environment,
        variable("PROCORE_CLIENT_ID")?,
        ClientSecret::new(variable("PROCORE_CLIENT_SECRET")?),
    );
    Ok(Target {
        oauth,
        emulator: None,
    })
}

/// Where `installed_app` saves the user's token for the other examples
/// (`PROCORE_TOKEN_FILE`, default `procore-token.json`).
pub fn token_file() -> std::path::PathBuf {
    std::env::var_os("PROCORE_TOKEN_FILE").map_or_else(|| "procore-token.json".into(), Into::into)
}

/// A manager for a user token. Against the emulator, the user "authorizes" on the
/// spot (a real code exchange); against Procore, the token saved by the
/// `installed_app` example is used and kept up to date in its file.
///
/// # Errors
///
/// A message for the user if there is no saved token or the exchange fails.
pub async fn user_manager(
    target: &Target,
    transport: impl procore_auth_core::Transport + Clone + 'static,
) -> Result<procore_auth_core::TokenManager, String> {
    use procore_auth_core::{AuthorizationCode, FileStore, RefreshTokenGrant, TokenManager};

    let grant = RefreshTokenGrant::new(target.oauth.clone(), transport.clone());
    match &target.emulator {
        Some(emulator) => {
            let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
            let token = target
                .oauth
                .exchange_code(&transport, &code, "http://localhost")
                .await
                .map_err(|e| format!("code exchange failed: {e}"))?;
            Ok(TokenManager::builder(grant).token(token).build())
        }
        None => {
            let path = token_file();
            if !path.exists() {
                return Err(format!(
                    "no saved token at {}: run `cargo run --example installed_app -- \
                     --procore-env <env>` first",
                    path.display()
                ));
            }
            Ok(TokenManager::builder(grant)
                .store(FileStore::new(path))
                .build())
        }
    }
}

/// Calls `GET /rest/v1.0/me` through `client`; against the emulator, forces every
/// token to expire and calls again to show the refresh. Prints what happens.
///
/// # Errors
///
/// The request's error, if it fails.
pub async fn call_me_across_an_expiry(
    target: &Target,
    client: &reqwest_middleware::ClientWithMiddleware,
    manager: &procore_auth_core::TokenManager,
) -> Result<(), reqwest_middleware::Error> {
    let me = format!("{}/rest/v1.0/me", target.api_base());
    let response = client.get(&me).send().await?;
    let status = response.status();
    println!("GET /rest/v1.0/me -> {status}: {}", response.text().await?);
    if let Some(emulator) = &target.emulator {
        emulator.expire_all_tokens();
        let status = client.get(&me).send().await?.status();
        println!("after the emulator expired every token -> {status} (a new token was used)");
    }
    println!("metrics: {:?}", manager.metrics());
    Ok(())
}
