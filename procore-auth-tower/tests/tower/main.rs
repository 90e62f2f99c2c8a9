//! What is the Tower adapter's own, end to end against procore-auth-testkit's emulator
//! over real loopback HTTP. Behaviour both adapters share (attaching, replaying after a
//! 401, streaming bodies, other hosts, the fault matrix) is written once in the
//! `procore-auth-conformance` package and run through this layer there. Where
//! tower-http's `FollowRedirect` goes is this adapter's own (`redirects`).

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, OAuthClient, RefreshTokenGrant, TokenManager,
};
use procore_auth_testkit::Emulator;
use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
use tower::{Layer, ServiceExt};

mod redirects;
mod retry;
mod transport;

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).unwrap(),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

#[tokio::test]
async fn token_calls_go_through_tower_transport_on_the_unwrapped_client() {
    let emulator = Emulator::start().await;
    let oauth = oauth(&emulator);
    let transport = TowerTransport::new(http_client());
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .build();
    let service = ProcoreAuthLayer::new(manager).layer(http_client());

    emulator.expire_all_tokens();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let request = Request::get(me).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(
        service.oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let stats = emulator.stats();
    assert_eq!(stats.authorization_code_grants, 1, "{stats:?}");
    assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
    assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
}
