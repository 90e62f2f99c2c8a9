//! What is the reqwest adapter's own, end to end against procore-auth-testkit's
//! emulator over real loopback HTTP: its constructors, what only reqwest has of
//! redirects (`redirects`), composition with the retry middleware, secret hygiene and the
//! soak. Behaviour both adapters share (attaching, replaying after a 401, streaming
//! bodies, other hosts, redirect chains, the fault matrix) is written once in the
//! `procore-auth-conformance` package and run through this middleware there.

mod redirects;
mod retry;
mod secrets;
mod soak;

use procore_auth_core::{AuthorizationCode, ClientSecret, Environment, OAuthClient};
use procore_auth_reqwest::{client_builder, ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{ApiFault, Emulator};
use reqwest::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).unwrap(),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

/// A middleware for a user who just went through the authorization-code flow.
async fn authorized(emulator: &Emulator) -> ProcoreAuthMiddleware {
    let oauth = oauth(emulator);
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&ReqwestTransport::new().unwrap(), &code, "http://localhost")
        .await
        .unwrap();
    ProcoreAuthMiddleware::from_token(oauth, token).unwrap()
}

/// The README's setup: a client that follows no redirects itself.
fn client(middleware: ProcoreAuthMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(client_builder().build().unwrap())
        .with(middleware)
        .build()
}

/// The middleware follows redirects: the hop to the storage host (another origin)
/// must not carry our bearer.
#[tokio::test]
async fn redirects_off_host_get_no_token() {
    let emulator = Emulator::start().await;
    let client = client(authorized(&emulator).await);
    // The file route answers 302 to the storage route on another host name.
    let file = format!("{}/rest/v1.0/files/7", emulator.base_url());
    let response = client.get(&file).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(stats.storage_requests, 1, "{stats:?}");
    assert_eq!(stats.storage_requests_with_authorization, 0, "{stats:?}");
    assert_eq!(stats.refresh_token_grants, 0, "{stats:?}");
}

#[tokio::test]
async fn client_credentials_mint_tokens_on_demand() {
    let emulator = Emulator::start().await;
    let middleware = ProcoreAuthMiddleware::from_client_credentials(oauth(&emulator)).unwrap();
    let client = client(middleware);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    assert_eq!(
        client.get(&me).send().await.unwrap().status(),
        StatusCode::OK
    );
    emulator.expire_all_tokens();
    assert_eq!(
        client.get(&me).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(emulator.stats().client_credentials_grants, 2);
}

#[tokio::test]
async fn composes_with_the_retry_middleware_placed_outside() {
    use procore_auth_core::{Jitter, RetryPolicy};
    use procore_auth_reqwest::ProcoreRetryMiddleware;
    let emulator = Emulator::start().await;
    let policy = RetryPolicy::new()
        .backoff(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(10),
        )
        .jitter(Jitter::none());
    // The recommended order: retries outside, authorization inside.
    let client = ClientBuilder::new(client_builder().build().unwrap())
        .with(ProcoreRetryMiddleware::new(policy))
        .with(authorized(&emulator).await)
        .build();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());

    // A 503 is retried, and the retry carries the token.
    emulator.push_api_fault(ApiFault::Unavailable {
        retry_after_secs: 0,
    });
    assert_eq!(
        client.get(&me).send().await.unwrap().status(),
        StatusCode::OK
    );
    let stats = emulator.stats();
    assert_eq!(stats.api_calls, 2, "{stats:?}");
    assert_eq!(stats.unauthorized_served, 0, "{stats:?}");

    // A 401 is ours to handle (once), not a transient failure to retry.
    emulator.expire_all_tokens();
    assert_eq!(
        client.get(&me).send().await.unwrap().status(),
        StatusCode::OK
    );
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(stats.api_calls, 4, "{stats:?}");
}
