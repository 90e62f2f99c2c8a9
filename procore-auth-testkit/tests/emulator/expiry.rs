//! The expiry knobs (`expire_early`, `floor_issue_times`) and a token response held back after
//! the rotation (`latency(Route::Token, …)`).

use std::time::Duration;

use procore_auth_testkit::{Emulator, Route, TokenFault};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::time::{sleep, sleep_until, Instant};

use crate::{client, me, oauth_error, refresh, status_json, token_call};

/// A client-credentials grant for the default client.
async fn client_credentials(emulator: &Emulator) -> Response {
    token_call(
        emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await
}

/// An authorization-code grant for a code made for `http://localhost`.
async fn code_exchange(emulator: &Emulator) -> Response {
    let code = emulator.authorize_code("http://localhost");
    token_call(
        emulator,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost"),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await
}

/// The token JSON of a successful grant.
async fn grant_json(response: Response) -> Value {
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string(), "{body}");
    body
}

/// Tokens from every grant: authorization code, refresh token, client credentials, as
/// `(grant, token JSON)`, plus one minted by `issue_token` (its JSON built by hand).
async fn tokens_from_every_grant(emulator: &Emulator) -> Vec<(&'static str, Value)> {
    let issued = emulator.issue_token();
    let refresh_token = issued.refresh_token.clone().unwrap();
    vec![
        (
            "issue_token",
            serde_json::json!({
                "access_token": issued.access_token,
                "expires_in": issued.expires_in,
                "created_at": issued.created_at,
            }),
        ),
        (
            "authorization_code",
            grant_json(code_exchange(emulator).await).await,
        ),
        (
            "refresh_token",
            grant_json(refresh(emulator, &refresh_token).await).await,
        ),
        (
            "client_credentials",
            grant_json(client_credentials(emulator).await).await,
        ),
    ]
}

/// `GET /oauth/token/info` for a bearer token.
async fn token_info(emulator: &Emulator, access_token: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}/oauth/token/info", emulator.base_url()))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("token info call");
    status_json(response).await
}

fn access_token(body: &Value) -> &str {
    body["access_token"].as_str().expect("an access token")
}

/// Asserts the API and the token-info route both refuse `token` as expired.
async fn assert_refused_as_expired(emulator: &Emulator, token: &str, what: &str) {
    let (status, body) = status_json(me(emulator, Some(token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["errors"], "The access token expired", "{what}");
    let (status, body) = token_info(emulator, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(
        body["error_description"], "The access token expired",
        "{what}"
    );
}

#[tokio::test]
async fn expire_early_refuses_tokens_from_every_grant_before_their_claimed_expiry() {
    const LIFETIME: Duration = Duration::from_secs(10);
    // The server accepts each token for 1.5 s of its claimed 10.
    let early = Emulator::builder()
        .access_token_lifetime(LIFETIME)
        .expire_early(Duration::from_millis(8500))
        .start()
        .await;
    let reference = Emulator::builder()
        .access_token_lifetime(LIFETIME)
        .start()
        .await;

    let now = reference.issue_token().created_at;
    let tokens = tokens_from_every_grant(&early).await;
    let reference_token = grant_json(client_credentials(&reference).await).await;
    let issued = Instant::now();
    for (grant, body) in &tokens {
        // The response claims the full lifetime, with a truthful `created_at`.
        assert_eq!(body["expires_in"], 10, "{grant}: {body}");
        let created_at = body["created_at"].as_i64().expect("created_at is sent");
        assert!((now..=now + 5).contains(&created_at), "{grant}: {body}");
        // Live at first, on both routes that check tokens; token info tells the real time left.
        let token = access_token(body);
        assert_eq!(
            me(&early, Some(token)).await.status(),
            StatusCode::OK,
            "{grant}"
        );
        let (status, info) = token_info(&early, token).await;
        assert_eq!(status, StatusCode::OK, "{grant}: {info}");
        assert!(
            info["expires_in_seconds"].as_i64().unwrap() <= 1,
            "{grant}: {info}"
        );
        assert_eq!(info["created_at"], created_at, "{grant}");
    }
    let (_, info) = token_info(&reference, access_token(&reference_token)).await;
    assert!(info["expires_in_seconds"].as_i64().unwrap() >= 8, "{info}");

    // Past the early expiry of every token, long before the claimed one.
    sleep_until(issued + Duration::from_millis(1700)).await;
    for (grant, body) in &tokens {
        assert_refused_as_expired(&early, access_token(body), grant).await;
    }
    assert_eq!(
        me(&reference, Some(access_token(&reference_token)))
            .await
            .status(),
        StatusCode::OK,
        "without the knob the same lifetime is still live"
    );
    assert!(issued.elapsed() < LIFETIME - Duration::from_secs(2));
    assert_eq!(early.stats().unauthorized_served, 2 * tokens.len() as u64);
}

#[tokio::test]
async fn floor_issue_times_omits_created_at_from_every_token_response() {
    let floored = Emulator::builder().floor_issue_times(true).start().await;
    let reference = Emulator::start().await;

    for (grant, body) in tokens_from_every_grant(&floored).await.iter().skip(1) {
        assert!(body.get("created_at").is_none(), "{grant}: {body}");
        assert_eq!(body["expires_in"], 5400, "{grant}: {body}");
        assert_eq!(body["token_type"], "bearer", "{grant}: {body}");
        let token = access_token(body);
        assert_eq!(
            me(&floored, Some(token)).await.status(),
            StatusCode::OK,
            "{grant}"
        );
        // Token introspection is not RFC 6749: it still reports the (floored) issue time.
        let (status, info) = token_info(&floored, token).await;
        assert_eq!(status, StatusCode::OK, "{grant}: {info}");
        assert!(info["created_at"].is_i64(), "{grant}: {info}");
    }
    for (grant, body) in tokens_from_every_grant(&reference).await.iter().skip(1) {
        assert!(body["created_at"].is_i64(), "{grant}: {body}");
    }

    // Faults that answer a token body leave it out too.
    let refresh_token = floored.issue_token().refresh_token.unwrap();
    floored.push_token_fault(TokenFault::MissingAccessToken);
    let (status, body) = status_json(refresh(&floored, &refresh_token).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("created_at").is_none(), "{body}");
    assert_eq!(body["expires_in"], 5400, "{body}");
}

/// Waits until the emulator's clock has just entered a new second, then `into` the second;
/// returns that second (Unix seconds).
async fn enter_second(emulator: &Emulator, into: Duration) -> i64 {
    let start = emulator.issue_token().created_at;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = emulator.issue_token().created_at;
        if now != start {
            sleep(into).await;
            return now;
        }
        assert!(Instant::now() < deadline, "the emulator's clock is stuck");
        sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn floor_issue_times_expires_tokens_up_to_a_second_before_receive_time_plus_expires_in() {
    const LIFETIME: Duration = Duration::from_secs(2);
    let floored = Emulator::builder()
        .floor_issue_times(true)
        .access_token_lifetime(LIFETIME)
        .start()
        .await;
    let reference = Emulator::builder()
        .access_token_lifetime(LIFETIME)
        .start()
        .await;

    // Mint 0.7 s into a second `s`: the floored token dies at `s + 2`, 0.7 s before
    // `receive time + expires_in`; the reference token lives until `mint time + 2`.
    // A loaded machine can push the mint into the next second, or the checks past the
    // client-side expiry (where they prove nothing): such a round is inconclusive and is
    // run again. A refused floored token stays refused, so lateness never fails it.
    for _ in 0..10 {
        let second = enter_second(&floored, Duration::from_millis(700)).await;
        let sent = Instant::now();
        let refresh_token = floored.issue_token().refresh_token.unwrap();
        let floored_tokens = [
            grant_json(client_credentials(&floored).await).await,
            grant_json(refresh(&floored, &refresh_token).await).await,
            grant_json(code_exchange(&floored).await).await,
        ];
        let reference_token = grant_json(client_credentials(&reference).await).await;
        let received = Instant::now();
        let (_, info) = token_info(&floored, access_token(&floored_tokens[2])).await;
        if info["created_at"] != second || received - sent >= Duration::from_millis(250) {
            continue;
        }
        for body in &floored_tokens {
            assert!(body.get("created_at").is_none(), "{body}");
            assert_eq!(body["expires_in"], 2, "{body}");
            assert_eq!(
                me(&floored, Some(access_token(body))).await.status(),
                StatusCode::OK
            );
        }

        // After `s + 2` (the mint was at `s + 0.7` or later), but before any of the floored
        // tokens' `send time + expires_in` (`s + 2.7` or later).
        sleep_until(received + Duration::from_millis(1350)).await;
        let reference_status = me(&reference, Some(access_token(&reference_token)))
            .await
            .status();
        for body in &floored_tokens {
            assert_refused_as_expired(&floored, access_token(body), "floored").await;
        }
        if sent.elapsed() >= LIFETIME {
            continue;
        }
        assert_eq!(
            reference_status,
            StatusCode::OK,
            "without the knob the token lives expires_in from its mint"
        );
        return;
    }
    panic!("ten rounds in a row were too slow to judge");
}

#[tokio::test]
async fn token_latency_holds_the_response_after_the_rotation() {
    const LATENCY: Duration = Duration::from_millis(1000);
    let emulator = Emulator::builder()
        .latency(Route::Token, LATENCY)
        .start()
        .await;
    let old = emulator.issue_token().refresh_token.unwrap();

    let started = Instant::now();
    let in_flight = {
        let (url, form) = (
            format!("{}/oauth/token", emulator.base_url()),
            [
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", old.clone()),
                ("client_id", emulator.client_id().to_owned()),
                ("client_secret", emulator.client_secret().to_owned()),
            ],
        );
        tokio::spawn(async move { client().post(url).form(&form).send().await })
    };
    // The server rotates first, while the response is still held back.
    while emulator.stats().consumed_refresh_tokens.is_empty() {
        assert!(
            started.elapsed() < LATENCY / 2,
            "the refresh was not processed before the wait"
        );
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emulator.stats().consumed_refresh_tokens, vec![old.clone()]);
    assert!(!in_flight.is_finished(), "the response came early");

    // The response arrives late, with the new pair.
    let response = in_flight.await.unwrap().expect("a response");
    assert!(started.elapsed() >= LATENCY, "{:?}", started.elapsed());
    let body = grant_json(response).await;
    assert_ne!(body["refresh_token"].as_str(), Some(old.as_str()));
    assert_eq!(
        me(&emulator, Some(access_token(&body))).await.status(),
        StatusCode::OK
    );
    // The old refresh token was burned before the response went out.
    assert_eq!(
        oauth_error(refresh(&emulator, &old).await, 400).await,
        "invalid_grant"
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.refresh_token_grants, stats.failed_token_calls),
        (2, 1)
    );
}
