//! The OAuth endpoints: authorize, token grants and their errors, revoke, token info.

use std::sync::Arc;

use procore_auth_testkit::Emulator;
use reqwest::header::{CACHE_CONTROL, LOCATION, PRAGMA};
use reqwest::StatusCode;
use serde_json::json;

use crate::{client, me, oauth_error, refresh, status_json, token_call};

const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Form fields of a request.
type Form<'a> = Vec<(&'a str, &'a str)>;

/// Follows `/oauth/authorize` by hand and returns the `Location` it redirects to.
async fn authorize(emulator: &Emulator, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(format!("{}/oauth/authorize", emulator.base_url()))
        .query(query)
        .send()
        .await
        .expect("authorize call")
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).expect("a URL");
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn exchange_code(emulator: &Emulator, code: &str, redirect_uri: &str) -> reqwest::Response {
    token_call(
        emulator,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await
}

#[tokio::test]
async fn authorize_redirects_with_a_code_that_exchanges_exactly_once() {
    let emulator = Emulator::start().await;
    let response = authorize(
        &emulator,
        &[
            ("response_type", "code"),
            ("client_id", emulator.client_id()),
            ("redirect_uri", "http://localhost"),
            ("state", "st&te 1"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://localhost?code="), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st&te 1"));
    let code = query_param(&location, "code").expect("a code");

    let response = exchange_code(&emulator, &code, "http://localhost").await;
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[PRAGMA], "no-cache");
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 5400);
    assert!(body["created_at"].as_i64().unwrap() > 1_600_000_000);
    let access_token = body["access_token"].as_str().unwrap();
    let refresh_token = body["refresh_token"].as_str().unwrap();
    assert!(access_token.len() >= 40 && refresh_token.len() >= 40);
    assert_ne!(access_token, refresh_token);
    assert_eq!(
        me(&emulator, Some(access_token)).await.status(),
        StatusCode::OK
    );

    let reuse = exchange_code(&emulator, &code, "http://localhost").await;
    assert_eq!(oauth_error(reuse, 400).await, "invalid_grant");
    let stats = emulator.stats();
    assert_eq!(stats.token_calls, 2);
    assert_eq!(stats.authorization_code_grants, 2);
    assert_eq!(stats.failed_token_calls, 1);
}

#[tokio::test]
async fn authorize_shows_the_code_on_a_page_for_the_oob_redirect() {
    let emulator = Emulator::start().await;
    let response = authorize(
        &emulator,
        &[
            ("response_type", "code"),
            ("client_id", emulator.client_id()),
            ("redirect_uri", OOB),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let start = page
        .find("<code id=\"authorization_code\">")
        .expect("the code element")
        + "<code id=\"authorization_code\">".len();
    let code = &page[start..start + page[start..].find('<').unwrap()];
    let response = exchange_code(&emulator, code, OOB).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn authorize_refuses_unknown_clients_and_unregistered_redirect_uris() {
    let emulator = Emulator::builder()
        .redirect_uri("http://127.0.0.1:9/callback?app=1")
        .start()
        .await;
    let id = emulator.client_id();
    let bad = [
        vec![
            ("response_type", "code"),
            ("client_id", "nobody"),
            ("redirect_uri", "http://localhost"),
        ],
        vec![
            ("response_type", "code"),
            ("redirect_uri", "http://localhost"),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", id),
            ("redirect_uri", "http://localhost/other"),
        ],
        vec![("response_type", "code"), ("client_id", id)],
    ];
    for query in &bad {
        let response = authorize(&emulator, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert!(response.headers().get(LOCATION).is_none());
    }

    // A registered extra URI with a query of its own; a wrong response_type is redirected.
    let query = [
        ("response_type", "token"),
        ("client_id", id),
        ("redirect_uri", "http://127.0.0.1:9/callback?app=1"),
        ("state", "s"),
    ];
    let response = authorize(&emulator, &query).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        "http://127.0.0.1:9/callback?app=1&error=unsupported_response_type&state=s"
    );
}

#[tokio::test]
async fn codes_are_bound_to_their_client_and_redirect_uri() {
    let emulator = Emulator::builder()
        .client("other-client", "other-secret")
        .start()
        .await;
    let code = emulator.authorize_code("http://localhost");

    let wrong_uri = exchange_code(&emulator, &code, OOB).await;
    assert_eq!(oauth_error(wrong_uri, 400).await, "invalid_grant");
    let other_client = token_call(
        &emulator,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost"),
            ("client_id", "other-client"),
            ("client_secret", "other-secret"),
        ],
    )
    .await;
    assert_eq!(oauth_error(other_client, 400).await, "invalid_grant");
    let missing_uri = token_call(
        &emulator,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await;
    assert_eq!(oauth_error(missing_uri, 400).await, "invalid_request");

    // Failed attempts do not use the code up.
    let response = exchange_code(&emulator, &code, "http://localhost").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_invalid_grant() {
    let emulator = Emulator::start().await;
    let first = emulator.issue_token();
    let old = first.refresh_token.clone().unwrap();

    let (status, body) = status_json(refresh(&emulator, &old).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_access = body["access_token"].as_str().unwrap().to_owned();
    let new_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_access, first.access_token);
    assert_ne!(new_refresh, old);
    assert_eq!(
        me(&emulator, Some(&new_access)).await.status(),
        StatusCode::OK
    );

    assert_eq!(
        oauth_error(refresh(&emulator, &old).await, 400).await,
        "invalid_grant"
    );
    assert_eq!(
        oauth_error(refresh(&emulator, "made-up").await, 400).await,
        "invalid_grant"
    );
    assert_eq!(
        refresh(&emulator, &new_refresh).await.status(),
        StatusCode::OK
    );

    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 4);
    assert_eq!(stats.failed_token_calls, 2);
    assert_eq!(stats.consumed_refresh_tokens, vec![old, new_refresh]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_exactly_one_succeeds() {
    const RACERS: usize = 8;
    let emulator = Arc::new(Emulator::start().await);
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (emulator, token, barrier) = (
                Arc::clone(&emulator),
                refresh_token.clone(),
                Arc::clone(&barrier),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                refresh(&emulator, &token).await.status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    let winners = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let losers = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((winners, losers), (1, RACERS - 1), "{statuses:?}");
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, RACERS as u64);
    assert_eq!(stats.consumed_refresh_tokens, vec![refresh_token]);
}

#[tokio::test]
async fn client_credentials_issue_no_refresh_token() {
    let emulator = Emulator::start().await;
    let response = token_call(
        &emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access_token = body["access_token"].as_str().unwrap();

    let (status, me) = status_json(me(&emulator, Some(access_token)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["login"], "testkit.service-account@example.com");
    let info = client()
        .get(format!("{}/oauth/token/info", emulator.base_url()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    let (_, info) = status_json(info).await;
    assert!(info["resource_owner_id"].is_null(), "{info}");
    assert_eq!(emulator.stats().client_credentials_grants, 1);
}

#[tokio::test]
async fn the_token_endpoint_accepts_json_bodies() {
    let emulator = Emulator::start().await;
    let grant = emulator.issue_token();
    let response = client()
        .post(format!("{}/oauth/token", emulator.base_url()))
        .json(&json!({
            "grant_type": "refresh_token",
            "refresh_token": grant.refresh_token,
            "client_id": emulator.client_id(),
            "client_secret": emulator.client_secret(),
        }))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn token_errors_follow_rfc_6749() {
    let emulator = Emulator::start().await;
    let (id, secret) = (emulator.client_id(), emulator.client_secret());
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    let rt = refresh_token.as_str();

    let cases: Vec<(Form<'_>, u16, &str)> = vec![
        (
            vec![("client_id", id), ("client_secret", secret)],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", id),
                ("client_secret", "wrong"),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "nobody"),
                ("client_secret", secret),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", rt)],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", id),
                ("client_secret", secret),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (form, status, error) in &cases {
        assert_eq!(
            oauth_error(token_call(&emulator, form).await, *status).await,
            *error,
            "{form:?}"
        );
    }

    let raw = |content_type: &'static str, body: &'static [u8]| {
        client()
            .post(format!("{}/oauth/token", emulator.base_url()))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let not_utf8 = raw(
        "application/x-www-form-urlencoded",
        b"grant_type=refresh_token&refresh_token=\xff",
    )
    .await
    .unwrap();
    assert_eq!(oauth_error(not_utf8, 400).await, "invalid_request");
    let bad_json = raw("application/json", b"{\"grant_type\":").await.unwrap();
    assert_eq!(oauth_error(bad_json, 400).await, "invalid_request");

    // None of the failures touched the refresh token.
    assert_eq!(refresh(&emulator, rt).await.status(), StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(stats.token_calls, cases.len() as u64 + 3);
    assert_eq!(stats.failed_token_calls, cases.len() as u64 + 2);
    // The duplicate-parameter and unparsable bodies name no grant type that can be counted.
    assert_eq!(stats.refresh_token_grants, 4 + 1);
}

async fn revoke(emulator: &Emulator, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/revoke", emulator.base_url()))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn revoke_kills_the_access_and_refresh_token_and_answers_200_for_unknown_tokens() {
    let emulator = Emulator::start().await;
    let (id, secret) = (emulator.client_id(), emulator.client_secret());
    let by_access = emulator.issue_token();
    let by_refresh = emulator.issue_token();
    let untouched = emulator.issue_token();

    let response = revoke(
        &emulator,
        &[
            ("token", &by_access.access_token),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let refresh_of_revoked = by_refresh.refresh_token.as_deref().unwrap();
    let response = revoke(
        &emulator,
        &[
            ("token", refresh_of_revoked),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = revoke(
        &emulator,
        &[
            ("token", "never-issued"),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    for grant in [&by_access, &by_refresh] {
        assert_eq!(
            me(&emulator, Some(&grant.access_token)).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let response = refresh(&emulator, grant.refresh_token.as_deref().unwrap()).await;
        assert_eq!(oauth_error(response, 400).await, "invalid_grant");
    }
    assert_eq!(
        me(&emulator, Some(&untouched.access_token)).await.status(),
        StatusCode::OK
    );

    let bad_client = revoke(
        &emulator,
        &[
            ("token", &untouched.access_token),
            ("client_id", id),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_eq!(oauth_error(bad_client, 401).await, "invalid_client");
    let no_token = revoke(&emulator, &[("client_id", id), ("client_secret", secret)]).await;
    assert_eq!(oauth_error(no_token, 400).await, "invalid_request");
    assert_eq!(
        me(&emulator, Some(&untouched.access_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(emulator.stats().revocations, 3);
}

#[tokio::test]
async fn token_info_describes_live_tokens_and_refuses_others() {
    let emulator = Emulator::start().await;
    let grant = emulator.issue_token();
    let info = |token: Option<&str>| {
        let request = client().get(format!("{}/oauth/token/info", emulator.base_url()));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { status_json(request.send().await.unwrap()).await }
    };

    let (status, body) = info(Some(&grant.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resource_owner_id"], 4242);
    assert_eq!(body["scopes"], json!([]));
    assert_eq!(body["application"]["uid"], "testkit-client-id");
    assert_eq!(body["created_at"], grant.created_at);
    let remaining = body["expires_in_seconds"].as_i64().unwrap();
    assert!((5390..=5400).contains(&remaining), "{remaining}");

    let (status, body) = info(Some("unknown")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(info(None).await.0, StatusCode::UNAUTHORIZED);
    emulator.expire_all_tokens();
    assert_eq!(
        info(Some(&grant.access_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(emulator.stats().unauthorized_served, 3);
}
