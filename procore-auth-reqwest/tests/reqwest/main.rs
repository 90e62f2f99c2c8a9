//! The reqwest middleware end to end, against procore-auth-testkit's emulator over
//! real loopback HTTP.

mod secrets;
mod soak;

use std::convert::Infallible;

use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, Error as AuthError, OAuthClient, RequestPolicy,
    TokenManager, PROCORE_COMPANY_ID,
};
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{ApiFault, Emulator, TokenFault};
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

fn client(middleware: ProcoreAuthMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

#[tokio::test]
async fn attaches_the_token_and_replays_once_after_a_forced_expiry() {
    let emulator = Emulator::start().await;
    let middleware = authorized(&emulator).await;
    let manager = middleware.manager().clone();
    let client = client(middleware);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());

    let response = client.get(&me).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("\"authorization_received\":true"));

    emulator.expire_all_tokens();
    let response = client.get(&me).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(stats.unauthorized_served, 1, "{stats:?}");
    assert_eq!(manager.metrics().rejections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_after_a_forced_expiry_cause_one_refresh() {
    let emulator = Emulator::start().await;
    let client = client(authorized(&emulator).await);
    emulator.expire_all_tokens();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let request = client.get(&me);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(
        stats.token_calls, 2,
        "one code exchange, one refresh: {stats:?}"
    );
}

#[tokio::test]
async fn a_streaming_body_gets_its_401_back_and_the_next_request_succeeds() {
    let emulator = Emulator::start().await;
    let client = client(authorized(&emulator).await);
    let echo = format!("{}/rest/v1.0/echo", emulator.base_url());
    let streaming = || {
        let chunks = ["hello ", "procore"].map(Ok::<_, Infallible>);
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    emulator.expire_all_tokens();
    let response = client.post(&echo).body(streaming()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(emulator.stats().refresh_token_grants, 1);
    let response = client.post(&echo).body(streaming()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "hello procore");
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

#[tokio::test]
async fn other_hosts_and_redirects_off_host_get_no_token() {
    let emulator = Emulator::start().await;
    let client = client(authorized(&emulator).await);
    let elsewhere = format!("{}/rest/v1.0/me", emulator.alternate_host_url());
    let response = client.get(&elsewhere).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("\"authorization_received\":false"));

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
async fn a_403_causes_no_refresh_and_a_second_401_is_returned_as_is() {
    let company = 5_000_000_001_u64;
    let emulator = Emulator::builder().forbidden_company(company).start().await;
    let client = client(authorized(&emulator).await);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let response = client
        .get(&me)
        .header(PROCORE_COMPANY_ID, company)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(emulator.stats().refresh_token_grants, 0);

    emulator.push_api_fault(ApiFault::Unauthorized);
    emulator.push_api_fault(ApiFault::Unauthorized);
    let response = client.get(&me).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(
        stats.api_calls, 3,
        "403, then a request and its one replay: {stats:?}"
    );
}

#[tokio::test]
async fn invalid_grant_is_a_downcastable_typed_error() {
    let emulator = Emulator::start().await;
    let client = client(authorized(&emulator).await);
    emulator.expire_all_tokens();
    emulator.push_token_fault(TokenFault::InvalidGrant);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let error = client.get(&me).send().await.unwrap_err();
    assert!(
        matches!(
            auth_error(&error),
            Some(AuthError::ReauthorizationRequired { .. })
        ),
        "{error:?}"
    );
    let again = client.get(&me).send().await.unwrap_err();
    assert!(matches!(
        auth_error(&again),
        Some(AuthError::ReauthorizationRequired { .. })
    ));
    assert_eq!(emulator.stats().refresh_token_grants, 1);
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
async fn default_company_id_and_sensitive_header() {
    let emulator = Emulator::start().await;
    let oauth = oauth(&emulator);
    let env = Environment::custom(&emulator.base_url()).unwrap();
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let transport = ReqwestTransport::new().unwrap();
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let manager =
        TokenManager::builder(procore_auth_core::RefreshTokenGrant::new(oauth, transport))
            .token(token)
            .request_policy(RequestPolicy::new(&env).with_company_id(4_294_967_297))
            .build();

    /// Records the Authorization header the next middleware sees.
    struct Inspect(std::sync::Arc<std::sync::Mutex<Option<http::HeaderValue>>>);
    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for Inspect {
        async fn handle(
            &self,
            request: reqwest::Request,
            extensions: &mut http::Extensions,
            next: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            *self.0.lock().unwrap() = request.headers().get(http::header::AUTHORIZATION).cloned();
            next.run(request, extensions).await
        }
    }
    let seen = std::sync::Arc::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ProcoreAuthMiddleware::new(manager))
        .with(Inspect(std::sync::Arc::clone(&seen)))
        .build();
    let response = client
        .get(format!("{}/rest/v1.0/me", emulator.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[PROCORE_COMPANY_ID], "4294967297");
    assert!(seen.lock().unwrap().as_ref().unwrap().is_sensitive());
}

#[tokio::test]
async fn composes_with_reqwest_retry_placed_outside() {
    use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
    let emulator = Emulator::start().await;
    let policy = ExponentialBackoff::builder()
        .retry_bounds(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(10),
        )
        .build_with_max_retries(2);
    // The recommended order: retries outside, authorization inside.
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .with(authorized(&emulator).await)
        .build();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());

    // A 503 is retried by reqwest-retry, and the retry carries the token.
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
