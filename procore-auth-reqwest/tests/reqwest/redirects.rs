//! Redirects the middleware follows itself: what only reqwest has (streaming bodies,
//! the hop limit, a wrapped client that follows redirects on its own). The behaviour
//! both adapters share (chains off and back to the API origin, foreign 401s, method
//! rules, generated chains) is in the `procore-auth-conformance` package.

use std::convert::Infallible;

use procore_auth_conformance::{authorized_manager, Origin};
use procore_auth_core::{Environment, RequestPolicy, TokenManager};
use procore_auth_reqwest::{client_builder, ProcoreAuthMiddleware, MAX_REDIRECTS};
use procore_auth_testkit::Emulator;
use reqwest::{Body, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

async fn manager_for(emulator: &Emulator, api: &Origin) -> TokenManager {
    let env = Environment::custom(api.url()).unwrap();
    authorized_manager(emulator, |builder| {
        builder.request_policy(RequestPolicy::new(&env))
    })
    .await
}

fn client_over(client: reqwest::Client, manager: &TokenManager) -> ClientWithMiddleware {
    ClientBuilder::new(client)
        .with(ProcoreAuthMiddleware::new(manager.clone()))
        .build()
}

fn stream(chunks: &'static [&'static str]) -> Body {
    Body::wrap_stream(futures_util::stream::iter(
        chunks.iter().map(|chunk| Ok::<_, Infallible>(*chunk)),
    ))
}

/// A 307/308 must re-send the body, and a stream cannot be copied: the redirect comes
/// back as is. A 303 drops the body anyway, so it is followed (as a GET).
#[tokio::test]
async fn a_streaming_body_follows_303_but_gets_its_307_back() {
    let (emulator, api) = (Emulator::start().await, Origin::start().await);
    let client = client_over(
        client_builder().build().unwrap(),
        &manager_for(&emulator, &api).await,
    );
    api.redirect("/temporary", 307, "/next");
    api.redirect("/see-other", 303, "/next");

    let response = client
        .post(api.url_for("/temporary"))
        .body(stream(&["a", "b"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    let response = client
        .post(api.url_for("/see-other"))
        .body(stream(&["a", "b"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "GET ");
    let paths: Vec<_> = api.seen().into_iter().map(|seen| seen.path).collect();
    assert_eq!(paths, ["/temporary", "/see-other", "/next"]);
}

/// At most `MAX_REDIRECTS` redirects are followed; the next one comes back as is.
#[tokio::test]
async fn past_max_redirects_the_redirect_comes_back() {
    let (emulator, api) = (Emulator::start().await, Origin::start().await);
    let client = client_over(
        client_builder().build().unwrap(),
        &manager_for(&emulator, &api).await,
    );
    for hop in 0..=MAX_REDIRECTS {
        api.redirect(&format!("/{hop}"), 302, format!("/{}", hop + 1));
    }
    let response = client.get(api.url_for("/0")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(api.seen().len(), MAX_REDIRECTS + 1);
}

/// With a client that follows redirects itself (reqwest's default), the middleware
/// sees only the first hop: reqwest then sends the bearer to a second hop on another
/// origin (it compares each hop with the previous one only), which is why the docs
/// say to use `client_builder()`. The middleware notices that the response is not
/// from the URL it sent, and does not take a foreign 401 for Procore's.
#[tokio::test]
async fn a_client_that_follows_redirects_itself_leaks_and_is_not_judged() {
    let (emulator, api, foreign) = (
        Emulator::start().await,
        Origin::start().await,
        Origin::start().await,
    );
    let manager = manager_for(&emulator, &api).await;
    let client = client_over(reqwest::Client::new(), &manager);
    api.redirect("/files/7", 302, foreign.url_for("/a"));
    foreign.redirect("/a", 302, foreign.url_for("/b"));
    foreign.answer("/b", 401);

    let response = client.get(api.url_for("/files/7")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let leaked: Vec<_> = foreign
        .seen()
        .into_iter()
        .map(|seen| seen.authorization.is_some())
        .collect();
    assert_eq!(
        leaked,
        [false, true],
        "reqwest's own following leaks on the second hop"
    );
    let stats = emulator.stats();
    assert_eq!(stats.token_calls, 1, "the code exchange only: {stats:?}");
    assert_eq!(manager.metrics().rejections, 0);
}
