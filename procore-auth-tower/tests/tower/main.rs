//! The Tower layer end to end: a `hyper_util` client wrapped with `ProcoreAuthLayer`,
//! against procore-auth-testkit's emulator over real loopback HTTP.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    ClientSecret, Environment, Error as AuthError, OAuthClient, RefreshTokenGrant, RequestPolicy,
    TokenManager, PROCORE_COMPANY_ID,
};
use procore_auth_testkit::{ApiFault, Emulator, TokenFault};
use procore_auth_tower::{Error, ProcoreAuthLayer, TowerTransport};
use tower::{Layer, Service, ServiceExt};

type HttpClient<B> = Client<HttpConnector, B>;

fn http_client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).unwrap(),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

/// A manager holding a token from a real authorization-code exchange, refreshing
/// through the (unwrapped) hyper client.
async fn authorized_manager(emulator: &Emulator) -> TokenManager {
    authorized_manager_with(emulator, |builder| builder).await
}

async fn authorized_manager_with(
    emulator: &Emulator,
    configure: impl FnOnce(
        procore_auth_core::TokenManagerBuilder,
    ) -> procore_auth_core::TokenManagerBuilder,
) -> TokenManager {
    let transport = TowerTransport::new(http_client::<Full<Bytes>>());
    let oauth = oauth(emulator);
    let code = emulator.authorize_code("http://localhost");
    let token = oauth
        .exchange_code(
            &transport,
            &procore_auth_core::AuthorizationCode::new(code),
            "http://localhost",
        )
        .await
        .unwrap();
    configure(TokenManager::builder(RefreshTokenGrant::new(oauth, transport)).token(token)).build()
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

async fn body_text<B>(response: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn attaches_the_token_and_replays_once_after_a_forced_expiry() {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator).await;
    let mut service = ProcoreAuthLayer::new(manager.clone()).layer(http_client());
    let me = format!("{}/rest/v1.0/me", emulator.base_url());

    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(me.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(emulator.stats().refresh_token_grants, 0);

    emulator.expire_all_tokens();
    let response = service.ready().await.unwrap().call(get(me)).await.unwrap();
    // The caller sees only the 200; underneath: 401, one refresh, one replay.
    assert_eq!(response.status(), StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1);
    assert_eq!(stats.unauthorized_served, 1);
    assert_eq!(manager.metrics().rejections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_after_a_forced_expiry_cause_one_refresh() {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator).await;
    let service = ProcoreAuthLayer::new(manager).layer(http_client());
    emulator.expire_all_tokens();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let requests: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(service.clone().oneshot(get(me.clone()))))
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
    let manager = authorized_manager(&emulator).await;
    let mut service = ProcoreAuthLayer::new(manager)
        .without_replay()
        .layer(http_client::<BoxBody<Bytes, Infallible>>());
    let echo = format!("{}/rest/v1.0/echo", emulator.base_url());
    let streaming = || {
        let chunks = futures_chunks(["hello ", "procore"]);
        Request::post(echo.clone())
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    };

    emulator.expire_all_tokens();
    let response = service
        .ready()
        .await
        .unwrap()
        .call(streaming())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The token was refreshed anyway, so the next request goes through.
    assert_eq!(emulator.stats().refresh_token_grants, 1);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(streaming())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "hello procore");
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

fn futures_chunks(
    chunks: [&'static str; 2],
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send + Sync {
    futures_util::stream::iter(chunks.map(|chunk| Ok(http_body::Frame::data(Bytes::from(chunk)))))
}

#[tokio::test]
async fn other_hosts_get_no_token_and_a_403_causes_no_refresh() {
    let forbidden_company = 5_000_000_001_u64;
    let emulator = Emulator::builder()
        .forbidden_company(forbidden_company)
        .start()
        .await;
    let manager = authorized_manager(&emulator).await;
    let mut service = ProcoreAuthLayer::new(manager).layer(http_client());

    // Same server, other host name: not the configured API origin.
    let elsewhere = format!("{}/rest/v1.0/me", emulator.alternate_host_url());
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(elsewhere))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(response)
        .await
        .contains("\"authorization_received\":false"));

    let mut forbidden = get(format!("{}/rest/v1.0/me", emulator.base_url()));
    forbidden
        .headers_mut()
        .insert(PROCORE_COMPANY_ID, forbidden_company.into());
    let response = service
        .ready()
        .await
        .unwrap()
        .call(forbidden)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 0, "{stats:?}");
    assert_eq!(stats.forbidden_served, 1, "{stats:?}");
}

#[tokio::test]
async fn a_second_401_is_returned_as_is() {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator).await;
    let mut service = ProcoreAuthLayer::new(manager).layer(http_client());
    emulator.push_api_fault(ApiFault::Unauthorized);
    emulator.push_api_fault(ApiFault::Unauthorized);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let response = service.ready().await.unwrap().call(get(me)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(
        stats.api_calls, 2,
        "the request and its one replay: {stats:?}"
    );
}

#[tokio::test]
async fn invalid_grant_surfaces_as_reauthorization_required() {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator).await;
    let mut service = ProcoreAuthLayer::new(manager).layer(http_client());
    emulator.expire_all_tokens();
    emulator.push_token_fault(TokenFault::InvalidGrant);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let error = service
        .ready()
        .await
        .unwrap()
        .call(get(me.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Auth(AuthError::ReauthorizationRequired { .. })
        ),
        "{error:?}"
    );
    // No further token calls until a new token is set.
    let again = service
        .ready()
        .await
        .unwrap()
        .call(get(me))
        .await
        .unwrap_err();
    assert!(matches!(
        again.auth(),
        Some(AuthError::ReauthorizationRequired { .. })
    ));
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

#[tokio::test]
async fn default_company_id_is_sent_and_a_callers_own_is_kept() {
    let emulator = Emulator::start().await;
    let env = Environment::custom(&emulator.base_url()).unwrap();
    let manager = authorized_manager_with(&emulator, |builder| {
        builder.request_policy(RequestPolicy::new(&env).with_company_id(4_294_967_297))
    })
    .await;
    let mut service = ProcoreAuthLayer::new(manager).layer(http_client());
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(me.clone()))
        .await
        .unwrap();
    assert_eq!(response.headers()[PROCORE_COMPANY_ID], "4294967297");
    let mut own = get(me);
    own.headers_mut().insert(PROCORE_COMPANY_ID, 12_u64.into());
    let response = service.ready().await.unwrap().call(own).await.unwrap();
    assert_eq!(response.headers()[PROCORE_COMPANY_ID], "12");
}

#[tokio::test]
async fn the_attached_header_is_sensitive_and_a_callers_authorization_is_kept() {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        tower::service_fn(move |request: Request<Empty<Bytes>>| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(request.headers().get(header::AUTHORIZATION).cloned());
                Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
            }
        })
    };
    let mut service = ProcoreAuthLayer::new(manager).layer(recorder);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let request = Request::get(me.clone()).body(Empty::new()).unwrap();
    service.ready().await.unwrap().call(request).await.unwrap();
    let mut own = Request::get(me).body(Empty::new()).unwrap();
    own.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer callers-own".parse().unwrap());
    service.ready().await.unwrap().call(own).await.unwrap();

    let seen = seen.lock().unwrap();
    let ours = seen[0].as_ref().unwrap();
    assert!(ours.to_str().unwrap().starts_with("Bearer "));
    assert!(ours.is_sensitive());
    assert_eq!(seen[1].as_ref().unwrap(), "Bearer callers-own");
}
