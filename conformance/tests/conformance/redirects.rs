//! Redirects: our bearer goes to the API origin on every hop that reaches it, and to no
//! other origin on any hop; only a 401 from a hop that carried it counts as Procore
//! rejecting it. The API origin and the foreign origins are scripted loopback servers
//! ([`Origin`]); tokens come from the emulator, whose counters show every token call.
//! Each adapter runs in its documented redirect setup ([`FollowingClient`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE};
use http::{Method, Request, StatusCode};
use procore_auth_conformance::{
    authorized_manager, get, post, scenario, Adapter, FollowingClient, Origin, Seen,
};
use procore_auth_core::{Environment, RequestPolicy, TokenManager};
use procore_auth_testkit::Emulator;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A manager with a user token from `emulator` whose request policy trusts exactly
/// `api` (and sends a default company id, which must not leave the API origin either).
async fn manager_for(emulator: &Emulator, api: &Origin) -> TokenManager {
    let env = Environment::custom(api.url()).unwrap();
    authorized_manager(emulator, |builder| {
        builder.request_policy(RequestPolicy::new(&env).with_company_id(42))
    })
    .await
}

fn is_bearer(seen: &Seen) -> bool {
    seen.authorization
        .as_ref()
        .is_some_and(|value| value.to_str().unwrap().starts_with("Bearer "))
}

fn assert_nothing_leaked(foreign: &Origin) {
    let seen = foreign.seen();
    let leaked: Vec<_> = seen
        .iter()
        .filter(|seen| seen.authorization.is_some() || seen.company_id.is_some())
        .collect();
    assert!(leaked.is_empty(), "sent to a foreign origin: {leaked:#?}");
}

scenario! {
    /// API → foreign/a → foreign/b → foreign/c: no foreign hop carries the bearer (or
    /// the default company id), though the later hops stay on one foreign origin.
    #[tokio::test]
    async fn a_three_hop_chain_off_the_api_origin_never_carries_the_bearer(adapter) {
        let (emulator, api, foreign) = (Emulator::start().await, Origin::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        api.redirect("/files/7", 302, foreign.url_for("/a"));
        foreign.redirect("/a", 302, foreign.url_for("/b"));
        foreign.redirect("/b", 307, "/c"); // relative

        let reply = client.send(get(&api.url_for("/files/7"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "GET ");
        let at_api = api.seen();
        assert_eq!(at_api.len(), 1, "{at_api:?}");
        assert!(is_bearer(&at_api[0]), "{at_api:?}");
        assert_eq!(at_api[0].company_id.as_ref().unwrap(), "42");
        let paths: Vec<_> = foreign.seen().into_iter().map(|seen| seen.path).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_nothing_leaked(&foreign);
        assert_eq!(emulator.stats().token_calls, 1, "the code exchange only");
    }
}

scenario! {
    /// API → foreign → API: the hop back to the API origin carries the bearer again.
    #[tokio::test]
    async fn a_chain_back_to_the_api_origin_carries_the_bearer_again(adapter) {
        let (emulator, api, foreign) = (Emulator::start().await, Origin::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        api.redirect("/start", 302, foreign.url_for("/sign"));
        foreign.redirect("/sign", 303, api.url_for("/end"));

        assert_eq!(client.get(&api.url_for("/start")).await.unwrap(), StatusCode::OK);
        let at_api = api.seen();
        let paths: Vec<_> = at_api.iter().map(|seen| seen.path.as_str()).collect();
        assert_eq!(paths, ["/start", "/end"]);
        assert!(at_api.iter().all(is_bearer), "{at_api:?}");
        assert_eq!(at_api[1].authorization, at_api[0].authorization);
        assert_eq!(foreign.seen().len(), 1);
        assert_nothing_leaked(&foreign);
    }
}

scenario! {
    /// A 401 from a foreign redirect target is not Procore rejecting our token (it never
    /// got it): the caller gets the 401, with no token call and no replay of the POST.
    #[tokio::test]
    async fn a_foreign_401_after_a_redirect_is_returned_without_refresh_or_replay(adapter) {
        let (emulator, api, foreign) = (Emulator::start().await, Origin::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        api.redirect("/upload", 307, foreign.url_for("/bucket"));
        foreign.answer("/bucket", 401);

        let reply = client.send(post(&api.url_for("/upload"), "hello")).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let stats = emulator.stats();
        assert_eq!(stats.token_calls, 1, "the code exchange only: {stats:?}");
        assert_eq!(manager.metrics().rejections, 0);
        assert_eq!(api.seen().len(), 1, "no replay");
        let at_foreign = foreign.seen();
        assert_eq!(at_foreign.len(), 1, "{at_foreign:?}");
        assert_eq!((&at_foreign[0].method, &at_foreign[0].body[..]), (&Method::POST, &b"hello"[..]));
        assert_nothing_leaked(&foreign);
    }
}

scenario! {
    /// A 401 from the API origin after a redirect back to it is Procore's: one refresh,
    /// one replay of that hop with the new token.
    #[tokio::test]
    async fn a_401_from_the_api_origin_after_a_redirect_refreshes_and_replays_once(adapter) {
        let (emulator, api, foreign) = (Emulator::start().await, Origin::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        api.redirect("/start", 302, foreign.url_for("/hop"));
        foreign.redirect("/hop", 302, api.url_for("/denied"));
        api.answer("/denied", 401);

        let reply = client.send(get(&api.url_for("/start"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "the replay's 401 comes back");
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(manager.metrics().rejections, 1);
        let denied: Vec<_> = api.seen().into_iter().filter(|seen| seen.path == "/denied").collect();
        assert_eq!(denied.len(), 2, "the hop and its one replay: {denied:?}");
        assert!(denied.iter().all(is_bearer));
        assert_ne!(denied[0].authorization, denied[1].authorization, "a new token");
        assert_nothing_leaked(&foreign);
    }
}

scenario! {
    /// RFC 9110 method rules: 303 (and 301/302 after a POST) become a GET without the
    /// body; 307/308 keep the method and the body.
    #[tokio::test]
    async fn post_redirects_follow_the_rfc_9110_method_rules(adapter) {
        let (emulator, api) = (Emulator::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        for (status, expected) in [(301, "GET "), (302, "GET "), (303, "GET "), (307, "POST body"), (308, "POST body")] {
            let from = format!("/from/{status}");
            api.redirect(&from, status, format!("/to/{status}"));
            let reply = client.send(post(&api.url_for(&from), "body")).await.unwrap();
            assert_eq!((reply.status, reply.text()), (StatusCode::OK, expected), "{status}");
        }
        let at_api = api.seen();
        assert_eq!(at_api.len(), 10, "{at_api:?}");
        assert!(at_api.iter().all(is_bearer), "same origin: every hop gets the token");
    }
}

scenario! {
    /// A caller's own `Authorization` and `Cookie` are for the origin they addressed:
    /// dropped on a cross-origin hop, as browsers and reqwest do.
    #[tokio::test]
    async fn a_callers_authorization_and_cookie_stay_on_their_origin(adapter) {
        let (emulator, api, foreign) = (Emulator::start().await, Origin::start().await, Origin::start().await);
        let manager = manager_for(&emulator, &api).await;
        let client = FollowingClient::new(adapter, &manager);
        api.redirect("/start", 302, foreign.url_for("/a"));
        foreign.redirect("/a", 302, "/b");
        let request = Request::get(api.url_for("/start"))
            .header(AUTHORIZATION, "Basic Y2FsbGVyOm93bg==")
            .header(COOKIE, "session=1")
            .body(Bytes::new())
            .unwrap();

        assert_eq!(client.send(request).await.unwrap().status, StatusCode::OK);
        let at_api = api.seen();
        assert_eq!(at_api[0].authorization.as_ref().unwrap(), "Basic Y2FsbGVyOm93bg==");
        assert_eq!(at_api[0].cookie.as_ref().unwrap(), "session=1");
        let at_foreign = foreign.seen();
        assert_eq!(at_foreign.len(), 2);
        assert!(at_foreign.iter().all(|seen| seen.authorization.is_none() && seen.cookie.is_none()), "{at_foreign:?}");
    }
}

scenario! {
    /// The emulator's file route redirects to its storage host (same server, another
    /// host name): the download carries no token.
    #[tokio::test]
    async fn the_emulators_file_download_carries_no_token(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = FollowingClient::new(adapter, &manager);
        let file = format!("{}/rest/v1.0/files/7", emulator.base_url());
        assert_eq!(client.get(&file).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.storage_requests, 1, "{stats:?}");
        assert_eq!(stats.storage_requests_with_authorization, 0, "{stats:?}");
        assert_eq!(stats.api_calls, 1, "{stats:?}");
    }
}

/// One hop of a generated chain: the origin it goes to (0 = API, 1 and 2 foreign) and
/// the redirect status that sends it there.
#[derive(Clone, Debug)]
struct Hop {
    origin: usize,
    status: u16,
}

/// A generated chain: where it starts, its hops, what the last URL answers, the method.
#[derive(Clone, Debug)]
struct Chain {
    start: usize,
    hops: Vec<Hop>,
    last_status: u16,
    post: bool,
}

fn chains() -> impl Strategy<Value = Chain> {
    let hop = (
        0..3_usize,
        prop::sample::select(vec![301_u16, 302, 303, 307, 308]),
    )
        .prop_map(|(origin, status)| Hop { origin, status });
    (
        0..3_usize,
        prop::collection::vec(hop, 1..=5),
        prop::sample::select(vec![200_u16, 401]),
        any::<bool>(),
    )
        .prop_map(|(start, hops, last_status, post)| Chain {
            start,
            hops,
            last_status,
            post,
        })
}

/// Over generated redirect chains through both adapters: no request to a non-API
/// origin carries `Authorization`, every request to the API origin carries our bearer,
/// and a 401 from a foreign origin never causes a token call.
#[test]
fn no_redirect_chain_sends_the_bearer_off_the_api_origin() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (emulator, origins, clients) = runtime.block_on(async {
        let emulator = Emulator::start().await;
        let origins = [
            Origin::start().await,
            Origin::start().await,
            Origin::start().await,
        ];
        let manager = manager_for(&emulator, &origins[0]).await;
        let clients = [Adapter::Tower, Adapter::Reqwest]
            .map(|adapter| FollowingClient::new(adapter, &manager));
        (emulator, origins, clients)
    });
    let case = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&chains(), |chain| {
        for client in &clients {
            let id = case.fetch_add(1, Ordering::Relaxed);
            let path = |hop: usize| format!("/case{id}/hop{hop}");
            // Script the chain: the URL of hop i redirects to that of hop i + 1.
            let mut at = chain.start;
            for (index, hop) in chain.hops.iter().enumerate() {
                let target = if hop.origin == at {
                    path(index + 1) // relative, on the same origin
                } else {
                    origins[hop.origin].url_for(&path(index + 1))
                };
                origins[at].redirect(&path(index), hop.status, target);
                at = hop.origin;
            }
            origins[at].answer(&path(chain.hops.len()), chain.last_status);

            let before = emulator.stats().token_calls;
            let url = origins[chain.start].url_for(&path(0));
            let request = if chain.post {
                post(&url, "body")
            } else {
                get(&url)
            };
            runtime.block_on(client.send(request)).unwrap();
            let mine = |seen: &Seen| seen.path.starts_with(&format!("/case{id}/"));
            for foreign in &origins[1..] {
                for seen in foreign.seen().iter().filter(|seen| mine(seen)) {
                    prop_assert_eq!(&seen.authorization, &None, "{:?} {:?}", chain, seen);
                }
            }
            for seen in origins[0].seen().iter().filter(|seen| mine(seen)) {
                prop_assert!(is_bearer(seen), "{:?} {:?}", chain, seen);
            }
            if at != 0 && chain.last_status == 401 {
                prop_assert_eq!(emulator.stats().token_calls, before, "{:?}", chain);
            }
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
