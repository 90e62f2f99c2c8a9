//! Several users: identities, tokens bound to users, per-user faults, counters, expiry and
//! revocation, and scale.

use std::collections::HashSet;

use procore_auth_testkit::{Emulator, TokenFault, TokenGrant, UserId};
use reqwest::header::LOCATION;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::{client, me, oauth_error, refresh, status_json, token_call};

/// `GET /rest/v1.0/me` with a live token: the identity it answers.
async fn identity(emulator: &Emulator, access_token: &str) -> Value {
    let (status, body) = status_json(me(emulator, Some(access_token)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Asserts `/me` answers `user`'s identity for `access_token`.
async fn assert_identity(emulator: &Emulator, access_token: &str, user: UserId) {
    let body = identity(emulator, access_token).await;
    assert_eq!(body["id"], user.get(), "{body}");
    assert_eq!(body["login"], emulator.user_login(user).as_str(), "{body}");
    assert_eq!(body["name"], emulator.user_name(user).as_str(), "{body}");
    assert_eq!(body["authorization_received"], true, "{body}");
}

/// Refreshes successfully and returns the new pair.
async fn refreshed(emulator: &Emulator, refresh_token: &str) -> (String, String) {
    let (status, body) = status_json(refresh(emulator, refresh_token).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

fn refresh_token_of(grant: &TokenGrant) -> &str {
    grant.refresh_token.as_deref().unwrap()
}

#[tokio::test]
async fn me_answers_the_identity_of_the_user_each_token_belongs_to() {
    let emulator = Emulator::builder().users(3).start().await;
    let alice = emulator.add_user("alice@example.com");
    let users = emulator.users();
    assert_eq!(users.len(), 4);
    assert_eq!(users[0], emulator.default_user());
    assert_eq!(users[3], alice);
    assert_eq!(emulator.user_login(users[1]), "testkit.user2@example.com");
    assert_eq!(emulator.user_login(alice), "alice@example.com");

    // The default user is the one of old: same id, login and name.
    let default = emulator.issue_token();
    assert_eq!(default.user, emulator.default_user());
    let body = identity(&emulator, &default.access_token).await;
    assert_eq!(body["id"], 4242);
    assert_eq!(body["login"], "testkit.user@example.com");
    assert_eq!(body["name"], "Testkit User");

    let mut seen = (HashSet::new(), HashSet::new(), HashSet::new());
    for &user in &users {
        let grant = emulator.issue_token_for(user);
        assert_eq!(grant.user, user);
        assert_identity(&emulator, &grant.access_token, user).await;
        let body = identity(&emulator, &grant.access_token).await;
        seen.0.insert(body["id"].as_u64().unwrap());
        seen.1.insert(body["login"].as_str().unwrap().to_owned());
        seen.2.insert(body["name"].as_str().unwrap().to_owned());

        // Token introspection names the same resource owner.
        let (status, info) = status_json(
            client()
                .get(format!("{}/oauth/token/info", emulator.base_url()))
                .bearer_auth(&grant.access_token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info["resource_owner_id"], user.get());
    }
    assert_eq!(
        (seen.0.len(), seen.1.len(), seen.2.len()),
        (4, 4, 4),
        "{seen:?}"
    );
    assert_eq!(alice.to_string(), alice.get().to_string());
    assert!(
        !seen.0.contains(&4343),
        "the service account's id is not a user's"
    );
}

const REDIRECT_URI: &str = "http://localhost";

/// `GET /oauth/authorize` for a code, with an optional `login_hint`.
async fn authorize(emulator: &Emulator, login_hint: Option<&str>) -> reqwest::Response {
    let mut query = vec![
        ("client_id", emulator.client_id()),
        ("redirect_uri", REDIRECT_URI),
        ("response_type", "code"),
    ];
    if let Some(login) = login_hint {
        query.push(("login_hint", login));
    }
    client()
        .get(format!("{}/oauth/authorize", emulator.base_url()))
        .query(&query)
        .send()
        .await
        .expect("authorize call")
}

/// The code of an authorization redirect.
fn code_of(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code")
}

/// Exchanges a code successfully; returns the access token.
async fn exchange(emulator: &Emulator, code: &str) -> String {
    let response = token_call(
        emulator,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn codes_exchange_for_the_tokens_of_the_user_who_approved() {
    let emulator = Emulator::start().await;
    let bob = emulator.add_user("bob@example.com");
    let default_user = emulator.default_user();

    let code = code_of(&authorize(&emulator, Some("bob@example.com")).await);
    assert_identity(&emulator, &exchange(&emulator, &code).await, bob).await;
    let code = code_of(&authorize(&emulator, None).await);
    assert_identity(&emulator, &exchange(&emulator, &code).await, default_user).await;
    let code = code_of(&authorize(&emulator, Some("testkit.user@example.com")).await);
    assert_identity(&emulator, &exchange(&emulator, &code).await, default_user).await;

    // An unknown login cannot log in: shown, not redirected.
    let unknown = authorize(&emulator, Some("nobody@example.com")).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.headers().get(LOCATION).is_none());

    // The code made without a browser, too.
    let code = emulator.authorize_code_for(bob, REDIRECT_URI);
    assert_identity(&emulator, &exchange(&emulator, &code).await, bob).await;
    assert_eq!(emulator.user_stats(bob).token_calls, 2);
    assert_eq!(emulator.user_stats(default_user).token_calls, 2);
}

#[tokio::test]
async fn a_refresh_keeps_its_user_and_leaves_other_users_alone() {
    let emulator = Emulator::builder().users(2).start().await;
    let (a, b) = (emulator.users()[0], emulator.users()[1]);
    let grant_a = emulator.issue_token_for(a);
    let grant_b = emulator.issue_token_for(b);

    let (access_a, refresh_a) = refreshed(&emulator, refresh_token_of(&grant_a)).await;
    assert_identity(&emulator, &access_a, a).await;
    let (access_a, _) = refreshed(&emulator, &refresh_a).await;
    assert_identity(&emulator, &access_a, a).await;

    // B's pair is untouched: its access token still works, its refresh token is live once.
    assert_identity(&emulator, &grant_b.access_token, b).await;
    assert_eq!(emulator.user_stats(b).token_calls, 0);
    let (access_b, _) = refreshed(&emulator, refresh_token_of(&grant_b)).await;
    assert_identity(&emulator, &access_b, b).await;

    assert_eq!(emulator.user_stats(a).refresh_grants, 2);
    assert_eq!(emulator.user_stats(b).refresh_grants, 1);
}

#[tokio::test]
async fn a_users_scripted_faults_are_taken_only_by_that_users_calls() {
    let emulator = Emulator::start().await;
    let a = emulator.add_user("a@example.com");
    let b = emulator.add_user("b@example.com");
    let refresh_a = emulator.issue_token_for(a).refresh_token.unwrap();
    let mut refresh_b = emulator.issue_token_for(b).refresh_token.unwrap();
    for _ in 0..3 {
        emulator.push_token_fault_for(a, TokenFault::Status(503));
    }

    // A keeps failing, in front of the server (the refresh token stays live), while B
    // refreshes normally in between.
    for _ in 0..3 {
        assert_eq!(
            oauth_error(refresh(&emulator, &refresh_a).await, 503).await,
            "server_error"
        );
        let (access_b, next) = refreshed(&emulator, &refresh_b).await;
        assert_identity(&emulator, &access_b, b).await;
        refresh_b = next;
    }
    // A's queue is empty: the fourth call succeeds, with the same refresh token.
    let (access_a, _) = refreshed(&emulator, &refresh_a).await;
    assert_identity(&emulator, &access_a, a).await;

    let stats_a = emulator.user_stats(a);
    assert_eq!(
        (
            stats_a.token_calls,
            stats_a.failed_token_calls,
            stats_a.refresh_grants,
            stats_a.consumed_refresh_tokens
        ),
        (4, 3, 1, 1),
        "{stats_a:?}"
    );
    let stats_b = emulator.user_stats(b);
    assert_eq!(
        (
            stats_b.token_calls,
            stats_b.failed_token_calls,
            stats_b.refresh_grants
        ),
        (3, 0, 3),
        "{stats_b:?}"
    );
    let stats = emulator.stats();
    assert_eq!((stats.token_calls, stats.failed_token_calls), (7, 3));
}

#[tokio::test]
async fn per_user_invalid_grant_burns_only_that_users_token_and_global_faults_come_first() {
    let emulator = Emulator::builder().users(2).start().await;
    let (a, b) = (emulator.users()[0], emulator.users()[1]);
    let refresh_a = emulator.issue_token_for(a).refresh_token.unwrap();
    let refresh_b = emulator.issue_token_for(b).refresh_token.unwrap();
    emulator.push_token_fault_for(a, TokenFault::InvalidGrant);
    emulator.push_token_fault(TokenFault::Status(502));

    // The global fault goes to whoever calls next: B. A's fault waits for A.
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_b).await, 502).await,
        "server_error"
    );
    // Calls of no user (client credentials, unknown refresh tokens) never take A's fault.
    let credentials = token_call(
        &emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await;
    assert_eq!(credentials.status(), StatusCode::OK);
    assert_eq!(
        oauth_error(refresh(&emulator, "not-a-refresh-token").await, 400).await,
        "invalid_grant"
    );
    let (access_b, _) = refreshed(&emulator, &refresh_b).await;
    assert_identity(&emulator, &access_b, b).await;

    // A's call takes A's fault: processed (burned), then refused.
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_a).await, 400).await,
        "invalid_grant"
    );
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_a).await, 400).await,
        "invalid_grant",
        "A's refresh token was burned"
    );
    assert_eq!(
        emulator.stats().consumed_refresh_tokens,
        vec![refresh_b.clone(), refresh_a.clone()]
    );
    let stats_a = emulator.user_stats(a);
    assert_eq!(
        (
            stats_a.token_calls,
            stats_a.failed_token_calls,
            stats_a.refresh_grants
        ),
        (2, 2, 0)
    );
    let stats_b = emulator.user_stats(b);
    assert_eq!(
        (
            stats_b.token_calls,
            stats_b.failed_token_calls,
            stats_b.refresh_grants
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn user_stats_count_each_users_calls() {
    let emulator = Emulator::builder().users(3).start().await;
    let users = emulator.users();
    let (a, b, idle) = (users[0], users[1], users[2]);
    let grant_a = emulator.issue_token_for(a);
    let grant_b = emulator.issue_token_for(b);

    for _ in 0..3 {
        assert_identity(&emulator, &grant_a.access_token, a).await;
    }
    assert_identity(&emulator, &grant_b.access_token, b).await;
    let _ = refreshed(&emulator, refresh_token_of(&grant_b)).await;
    emulator.revoke_tokens_of(b);
    let (status, _) = status_json(me(&emulator, Some(&grant_b.access_token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown and missing tokens count for nobody.
    let _ = me(&emulator, Some("unknown")).await;
    let _ = me(&emulator, None).await;

    let stats_a = emulator.user_stats(a);
    assert_eq!(
        (
            stats_a.api_calls,
            stats_a.unauthorized_served,
            stats_a.token_calls
        ),
        (3, 0, 0)
    );
    let stats_b = emulator.user_stats(b);
    assert_eq!(
        (
            stats_b.api_calls,
            stats_b.unauthorized_served,
            stats_b.token_calls,
            stats_b.refresh_grants,
            stats_b.consumed_refresh_tokens,
        ),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(
        emulator.user_stats(idle),
        procore_auth_testkit::UserStats::default()
    );
    let stats = emulator.stats();
    assert_eq!((stats.api_calls, stats.unauthorized_served), (7, 3));
}

#[tokio::test]
async fn expire_and_revoke_tokens_of_a_user_touch_only_that_user() {
    let emulator = Emulator::builder().users(2).start().await;
    let (a, b) = (emulator.users()[0], emulator.users()[1]);
    let grant_a = emulator.issue_token_for(a);
    let grant_b = emulator.issue_token_for(b);

    emulator.expire_tokens_of(a);
    let (status, body) = status_json(me(&emulator, Some(&grant_a.access_token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"], "The access token expired");
    assert_identity(&emulator, &grant_b.access_token, b).await;
    // A's refresh token survives expiry; the new token is live.
    let (access_a, refresh_a) = refreshed(&emulator, refresh_token_of(&grant_a)).await;
    assert_identity(&emulator, &access_a, a).await;

    emulator.revoke_tokens_of(b);
    let (status, body) = status_json(me(&emulator, Some(&grant_b.access_token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"], "The access token was revoked");
    assert_eq!(
        oauth_error(refresh(&emulator, refresh_token_of(&grant_b)).await, 400).await,
        "invalid_grant"
    );
    assert_identity(&emulator, &access_a, a).await;
    let _ = refreshed(&emulator, &refresh_a).await;
    // B can start again.
    let again = emulator.issue_token_for(b);
    assert_identity(&emulator, &again.access_token, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_are_each_issued_their_own_token() {
    let emulator = Emulator::start().await;
    let added: Vec<UserId> = (0..1000)
        .map(|i| emulator.add_user(format!("tenant{i}@example.com")))
        .collect();
    assert_eq!(emulator.users().len(), 1001);
    assert_eq!(
        added.iter().collect::<HashSet<_>>().len(),
        1000,
        "distinct ids"
    );
    let grants: Vec<TokenGrant> = added
        .iter()
        .map(|&user| emulator.issue_token_for(user))
        .collect();

    let http = client();
    let base_url = emulator.base_url();
    let mut calls = JoinSet::new();
    for grant in grants {
        let (http, url) = (http.clone(), format!("{base_url}/rest/v1.0/me"));
        calls.spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(&grant.access_token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            (grant.user, body)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (user, body) = joined.unwrap();
        assert_eq!(body["id"], user.get());
        assert_eq!(body["login"], emulator.user_login(user).as_str());
    }
    for &user in &added {
        assert_eq!(emulator.user_stats(user).api_calls, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_users_make_twenty_concurrent_requests_each() {
    let emulator = Emulator::builder().users(100).start().await;
    let users = emulator.users();
    assert_eq!(users.len(), 100);
    let http: Client = client();
    let base_url = emulator.base_url();

    let mut calls = JoinSet::new();
    for &user in &users {
        let grant = emulator.issue_token_for(user);
        for i in 0..20 {
            let (http, base_url, grant) = (http.clone(), base_url.clone(), grant.clone());
            calls.spawn(async move {
                // One call per user refreshes (once: refresh tokens are single use), the others
                // read `/me`.
                if i == 0 {
                    let response = http
                        .post(format!("{base_url}/oauth/token"))
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("refresh_token", grant.refresh_token.as_deref().unwrap()),
                            ("client_id", "testkit-client-id"),
                            ("client_secret", "testkit-client-secret"),
                        ])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    return (grant.user, None);
                }
                let response = http
                    .get(format!("{base_url}/rest/v1.0/me"))
                    .bearer_auth(&grant.access_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body: Value = response.json().await.unwrap();
                (grant.user, Some(body))
            });
        }
    }
    while let Some(joined) = calls.join_next().await {
        if let (user, Some(body)) = joined.unwrap() {
            assert_eq!(body["id"], user.get());
        }
    }
    for &user in &users {
        let stats = emulator.user_stats(user);
        assert_eq!(
            (stats.api_calls, stats.token_calls, stats.refresh_grants),
            (19, 1, 1),
            "{user}: {stats:?}"
        );
    }
    assert_eq!(emulator.stats().api_calls, 1900);
}

#[tokio::test]
#[should_panic(expected = "a user with login")]
async fn adding_a_login_twice_panics() {
    let emulator = Emulator::start().await;
    emulator.add_user("twice@example.com");
    emulator.add_user("twice@example.com");
}

#[tokio::test]
#[should_panic(expected = "is not a user of this emulator")]
async fn another_emulators_user_is_refused() {
    let other = Emulator::builder().users(2).start().await;
    let emulator = Emulator::start().await;
    let _ = emulator.issue_token_for(other.users()[1]);
}
