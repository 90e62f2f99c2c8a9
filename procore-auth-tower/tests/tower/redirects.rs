//! Where tower-http's `FollowRedirect` goes, and why: outside `ProcoreAuthLayer`, every
//! hop passes the request policy, whatever the redirect policy; inside, the bearer
//! rides hops our layer never sees. The API origin and the foreign one are scripted
//! loopback servers; tokens come from the emulator.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use procore_auth_conformance::{Origin, Seen};
use procore_auth_core::{
    AuthorizationCode, Environment, RefreshTokenGrant, RequestPolicy, TokenManager,
};
use procore_auth_testkit::Emulator;
use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
use tower::{Layer, ServiceExt};
use tower_http::follow_redirect::policy::Limited;
use tower_http::follow_redirect::FollowRedirectLayer;

use crate::{http_client, oauth};

/// A manager with a user token from `emulator`, trusting exactly `api`.
async fn manager_for(emulator: &Emulator, api: &Origin) -> TokenManager {
    let (oauth, transport) = (oauth(emulator), TowerTransport::new(http_client()));
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let env = Environment::custom(api.url()).unwrap();
    TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .request_policy(RequestPolicy::new(&env))
        .build()
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

fn bearers(seen: &[Seen]) -> Vec<bool> {
    seen.iter()
        .map(|seen| seen.authorization.is_some())
        .collect()
}

/// The documented order: `FollowRedirectLayer` wraps `ProcoreAuthLayer`. A 3-hop
/// chain off the API origin carries no bearer; a chain back to it carries it again.
#[tokio::test]
async fn follow_redirect_outside_the_layer_sends_the_bearer_only_to_the_api_origin() {
    let (emulator, api, foreign) = (
        Emulator::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    let manager = manager_for(&emulator, &api).await;
    let service =
        FollowRedirectLayer::new().layer(ProcoreAuthLayer::new(manager).layer(http_client()));
    api.redirect("/files/7", 302, foreign.url_for("/a"));
    foreign.redirect("/a", 302, foreign.url_for("/b"));
    foreign.redirect("/b", 302, foreign.url_for("/c"));
    api.redirect("/start", 302, foreign.url_for("/sign"));
    foreign.redirect("/sign", 302, api.url_for("/end"));

    let response = service
        .clone()
        .oneshot(get(api.url_for("/files/7")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = service.oneshot(get(api.url_for("/start"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let at_api = api.seen();
    let paths: Vec<_> = at_api.iter().map(|seen| seen.path.as_str()).collect();
    assert_eq!(paths, ["/files/7", "/start", "/end"]);
    assert_eq!(bearers(&at_api), [true, true, true]);
    assert_eq!(bearers(&foreign.seen()), [false, false, false, false]);
}

/// Outside our layer, even a redirect policy that filters no credentials (`Limited`
/// alone) cannot leak the bearer: it is added per hop, by the request policy.
#[tokio::test]
async fn follow_redirect_outside_the_layer_is_safe_whatever_its_policy() {
    let (emulator, api, foreign) = (
        Emulator::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    let manager = manager_for(&emulator, &api).await;
    let service = FollowRedirectLayer::with_policy(Limited::default())
        .layer(ProcoreAuthLayer::new(manager).layer(http_client()));
    api.redirect("/files/7", 302, foreign.url_for("/a"));
    foreign.redirect("/a", 302, foreign.url_for("/b"));

    let response = service.oneshot(get(api.url_for("/files/7"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(bearers(&api.seen()), [true]);
    assert_eq!(bearers(&foreign.seen()), [false, false]);
}

/// The other order, shown so the docs are honest: `FollowRedirect` *inside* our layer
/// re-sends the request our layer already signed, so only its own credential filter
/// stands between the bearer and the foreign origin. Without one, the bearer leaks.
#[tokio::test]
async fn follow_redirect_inside_the_layer_leaks_the_bearer_without_a_credential_filter() {
    let (emulator, api, foreign) = (
        Emulator::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    let manager = manager_for(&emulator, &api).await;
    let follow = FollowRedirectLayer::with_policy(Limited::default()).layer(http_client());
    let service = ProcoreAuthLayer::new(manager).layer(follow);
    api.redirect("/files/7", 302, foreign.url_for("/a"));
    foreign.redirect("/a", 302, foreign.url_for("/b"));

    let response = service.oneshot(get(api.url_for("/files/7"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(bearers(&foreign.seen()), [true, true], "the bearer leaked");
}

/// The other order with tower-http's standard policy: its filter drops the bearer at
/// the first cross-origin hop (and for good, so the hop back to the API origin goes
/// without it), but our layer sees only the last response and takes a foreign 401 for
/// Procore's: a token call and a replay of the whole chain.
#[tokio::test]
async fn follow_redirect_inside_the_layer_takes_a_foreign_401_for_procores() {
    let (emulator, api, foreign) = (
        Emulator::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    let manager = manager_for(&emulator, &api).await;
    let follow = FollowRedirectLayer::new().layer(http_client());
    let service = ProcoreAuthLayer::new(manager.clone()).layer(follow);
    api.redirect("/upload", 302, foreign.url_for("/bucket"));
    foreign.answer("/bucket", 401);
    api.redirect("/start", 302, foreign.url_for("/sign"));
    foreign.redirect("/sign", 302, api.url_for("/end"));

    let response = service
        .clone()
        .oneshot(get(api.url_for("/upload")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = emulator.stats();
    assert_eq!(
        stats.refresh_token_grants, 1,
        "a needless refresh: {stats:?}"
    );
    assert_eq!(manager.metrics().rejections, 1);
    assert_eq!(bearers(&api.seen()), [true, true], "the chain was replayed");
    assert_eq!(bearers(&foreign.seen()), [false, false]);

    service.oneshot(get(api.url_for("/start"))).await.unwrap();
    let end: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|seen| seen.path == "/end")
        .collect();
    assert_eq!(
        bearers(&end),
        [false],
        "the hop back to the API origin lost the token"
    );
}
