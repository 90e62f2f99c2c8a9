//! Starting, configuring, running side by side and shutting down.

use std::time::Duration;

use procore_auth_testkit::{Emulator, Route, TokenFault};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::{client, me, refresh};

#[tokio::test]
async fn defaults_and_urls() {
    let emulator = Emulator::start().await;
    let base = emulator.base_url();
    let port = base
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback URL");
    assert!(port.parse::<u16>().is_ok(), "{base}");
    assert_eq!(
        emulator.alternate_host_url(),
        format!("http://localhost:{port}")
    );
    assert_eq!(emulator.client_id(), "testkit-client-id");
    assert_eq!(emulator.client_secret(), "testkit-client-secret");
    assert!(format!("{emulator:?}").contains(&base));
    let grant = emulator.issue_token();
    assert_eq!(grant.expires_in, 5400);
    assert_eq!(emulator.stats(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_emulators_run_in_parallel_and_share_nothing() {
    let mut emulators = Vec::new();
    for _ in 0..6 {
        emulators.push(Emulator::start().await);
    }
    let mut ports: Vec<String> = emulators.iter().map(Emulator::base_url).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), emulators.len());

    let grants: Vec<_> = emulators.iter().map(Emulator::issue_token).collect();
    let mut calls = tokio::task::JoinSet::new();
    for (i, emulator) in emulators.iter().enumerate() {
        let next = &emulators[(i + 1) % emulators.len()];
        let (own, foreign) = (
            grants[i].access_token.clone(),
            grants[(i + 1) % grants.len()].access_token.clone(),
        );
        let (url, next_url) = (emulator.base_url(), next.base_url());
        calls.spawn(async move {
            let get = |base: String, token: String| async move {
                client()
                    .get(format!("{base}/rest/v1.0/me"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            };
            // A token is only good on the emulator that issued it.
            (
                get(url.clone(), own).await,
                get(url, foreign.clone()).await,
                get(next_url, foreign).await,
            )
        });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(
            result.unwrap(),
            (StatusCode::OK, StatusCode::UNAUTHORIZED, StatusCode::OK)
        );
    }
    for emulator in &emulators {
        // Each served its own call, a foreign token, and its neighbour's token check.
        assert_eq!(emulator.stats().api_calls, 3);
    }
}

#[tokio::test]
async fn drop_shuts_down_promptly_even_with_a_hanging_request() {
    let emulator = Emulator::start().await;
    let base = emulator.base_url();
    emulator.push_token_fault(TokenFault::Hang);
    let hanging = tokio::spawn(
        client()
            .post(format!("{base}/oauth/token"))
            .form(&[("grant_type", "client_credentials")])
            .send(),
    );
    // Wait (bounded) until the server holds the request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while emulator.stats().token_calls == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    drop(emulator);
    let outcome = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("the hanging request ends when the emulator is dropped")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    let after = client().get(format!("{base}/rest/v1.0/me")).send().await;
    assert!(
        after.is_err_and(|e| e.is_connect()),
        "the port no longer accepts"
    );
}

#[tokio::test]
async fn latency_delays_responses_of_the_configured_route_only_after_processing() {
    let emulator = Emulator::builder()
        .latency(Route::Api, Duration::from_millis(300))
        .latency(Route::Token, Duration::from_secs(30))
        .start()
        .await;
    let grant = emulator.issue_token();

    let started = Instant::now();
    assert_eq!(
        me(&emulator, Some(&grant.access_token)).await.status(),
        StatusCode::OK
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // The refresh is applied before the delay: a client that times out has lost the new pair.
    let refresh_token = grant.refresh_token.unwrap();
    let error = client()
        .post(format!("{}/oauth/token", emulator.base_url()))
        .timeout(Duration::from_millis(200))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ])
        .send()
        .await
        .expect_err("slower than the client's timeout");
    assert!(error.is_timeout());
    assert_eq!(
        emulator.stats().consumed_refresh_tokens,
        vec![refresh_token]
    );
}

#[tokio::test]
async fn the_clock_offset_shifts_created_at_and_expiry_uses_the_shifted_clock() {
    const DAY: i64 = 86_400;
    let reference = Emulator::start().await;
    let behind = Emulator::builder().clock_offset_secs(-DAY).start().await;
    let ahead = Emulator::builder()
        .clock_offset_secs(DAY)
        .access_token_lifetime(Duration::from_secs(60))
        .start()
        .await;

    let now = reference.issue_token().created_at;
    let behind_grant = behind.issue_token();
    let shift = now - behind_grant.created_at;
    assert!((DAY - 5..=DAY + 5).contains(&shift), "{shift}");
    let ahead_grant = ahead.issue_token();
    assert!((DAY - 5..=DAY + 5).contains(&(ahead_grant.created_at - now)));
    assert_eq!(ahead_grant.expires_in, 60);

    // A day-old `created_at` is still valid on the emulator's own clock.
    assert_eq!(
        me(&behind, Some(&behind_grant.access_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        me(&ahead, Some(&ahead_grant.access_token)).await.status(),
        StatusCode::OK
    );
    let (_, body) =
        crate::status_json(refresh(&behind, behind_grant.refresh_token.as_deref().unwrap()).await)
            .await;
    let refreshed_at = body["created_at"].as_i64().unwrap();
    assert!((now - refreshed_at - DAY).abs() <= 5, "{refreshed_at}");
}
