//! Scripted token-endpoint faults, and which of them burn the refresh token.

use std::time::Duration;

use procore_auth_testkit::{Emulator, TokenFault};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use crate::{client, me, oauth_error, refresh, status_json};

/// Asserts the refresh token is dead: the server burned it.
async fn assert_burned(emulator: &Emulator, refresh_token: &str) {
    let response = refresh(emulator, refresh_token).await;
    assert_eq!(oauth_error(response, 400).await, "invalid_grant");
    assert!(emulator
        .stats()
        .consumed_refresh_tokens
        .iter()
        .any(|t| t == refresh_token));
}

/// The whole `source()` chain of an error, for assertion messages.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn gateway_faults_answer_in_order_and_leave_the_refresh_token_live() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::Status(503));
    emulator.push_token_fault(TokenFault::RateLimited {
        retry_after_secs: 7,
    });
    emulator.push_token_fault(TokenFault::Status(42)); // not a status code: 500

    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_token).await, 503).await,
        "server_error"
    );
    let limited = refresh(&emulator, &refresh_token).await;
    assert_eq!(limited.headers()[RETRY_AFTER], "7");
    assert_eq!(oauth_error(limited, 429).await, "rate_limited");
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_token).await, 500).await,
        "server_error"
    );

    // The queue is empty again, and the token survived all three.
    assert_eq!(
        refresh(&emulator, &refresh_token).await.status(),
        StatusCode::OK
    );
    let stats = emulator.stats();
    assert_eq!(stats.token_calls, 4);
    assert_eq!(stats.refresh_token_grants, 4);
    assert_eq!(stats.failed_token_calls, 3);
    assert_eq!(stats.consumed_refresh_tokens, vec![refresh_token]);
}

#[tokio::test]
async fn rotate_then_fail_burns_the_refresh_token_and_answers_500() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::RotateThenFail);
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_token).await, 500).await,
        "server_error"
    );
    assert_burned(&emulator, &refresh_token).await;
    assert_eq!(emulator.stats().refresh_token_grants, 2);
}

#[tokio::test]
async fn rotate_then_drop_burns_the_refresh_token_and_closes_the_connection_unanswered() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::RotateThenDrop);

    let sent = client()
        .post(format!("{}/oauth/token", emulator.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ])
        .send();
    let error = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .expect("the connection is closed, not left hanging")
        .expect_err("no response is sent");
    assert!(
        !error.is_timeout() && !error.is_status(),
        "{}",
        chain(&error)
    );
    assert!(error.is_request(), "{}", chain(&error));
    // hyper's `IncompleteMessage`: the socket closed with no response at all.
    assert!(
        chain(&error).contains("connection closed before message completed"),
        "{}",
        chain(&error)
    );

    // The client did not resend behind our back, and the server had rotated.
    assert_eq!(emulator.stats().token_calls, 1);
    assert_burned(&emulator, &refresh_token).await;
    // The server still serves other connections.
    assert_eq!(
        me(&emulator, Some(&emulator.issue_token().access_token))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::Hang);
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
        .expect_err("no answer");
    assert!(error.is_timeout(), "{}", chain(&error));
    // A hang happens in front of the server: the token was not processed.
    assert_eq!(
        refresh(&emulator, &refresh_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(emulator.stats().failed_token_calls, 1);
}

#[tokio::test]
async fn malformed_json_is_a_200_that_does_not_parse_after_a_real_rotation() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::MalformedJson);
    let response = refresh(&emulator, &refresh_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = response.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(
        serde_json::from_slice::<serde_json::Value>(&body).is_err(),
        "{body:?}"
    );
    assert_burned(&emulator, &refresh_token).await;
}

#[tokio::test]
async fn missing_access_token_is_a_200_without_it() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::MissingAccessToken);
    let (status, body) = status_json(refresh(&emulator, &refresh_token).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 5400);
    assert_burned(&emulator, &refresh_token).await;
    assert_eq!(emulator.stats().failed_token_calls, 2);
}

#[tokio::test]
async fn huge_body_pads_a_valid_token_response_to_the_requested_size() {
    const SIZE: usize = 10 * 1024 * 1024;
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::HugeBody { bytes: SIZE });
    let response = refresh(&emulator, &refresh_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), SIZE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let access_token = body["access_token"].as_str().unwrap();
    assert_eq!(
        me(&emulator, Some(access_token)).await.status(),
        StatusCode::OK
    );
    assert_burned(&emulator, &refresh_token).await;
}

#[tokio::test]
async fn invalid_grant_fault_burns_a_live_refresh_token() {
    let emulator = Emulator::start().await;
    let refresh_token = emulator.issue_token().refresh_token.unwrap();
    emulator.push_token_fault(TokenFault::InvalidGrant);
    assert_eq!(
        oauth_error(refresh(&emulator, &refresh_token).await, 400).await,
        "invalid_grant"
    );
    assert_burned(&emulator, &refresh_token).await;
}

#[tokio::test]
async fn faults_apply_to_any_grant_type() {
    let emulator = Emulator::start().await;
    emulator.push_token_fault(TokenFault::Status(500));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", emulator.client_id()),
        ("client_secret", emulator.client_secret()),
    ];
    assert_eq!(
        crate::token_call(&emulator, &form).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        crate::token_call(&emulator, &form).await.status(),
        StatusCode::OK
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.client_credentials_grants, stats.failed_token_calls),
        (2, 1)
    );
}
