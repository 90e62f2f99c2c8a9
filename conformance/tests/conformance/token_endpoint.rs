//! The fault matrix for the token endpoint: what callers see when a refresh fails,
//! is rate limited, hangs, answers garbage, or comes from a server whose clock is off.

use std::time::Duration;

use http::StatusCode;
use procore_auth_conformance::{
    authorized_manager, authorized_manager_with_timeout, frozen_clock, me, scenario, Adapter,
    Client, BACKOFF_MAX,
};
use procore_auth_core::{Error as AuthError, TransportErrorKind};
use procore_auth_testkit::{Emulator, TokenFault};

scenario! {
    /// 503s on refresh: every caller of a burst gets a typed, transient error, the
    /// burst costs one token call, and each back-off that passes allows one more
    /// attempt, until one works.
    #[tokio::test]
    async fn server_errors_on_refresh_are_transient_shared_and_bounded_then_recover(adapter) {
        let emulator = Emulator::start().await;
        // Time stands still, so the back-off outlasts the burst however slow the
        // machine: the burst's token calls are counted, not raced.
        let clock = frozen_clock();
        let manager = authorized_manager(&emulator, |builder| builder.clock(clock.clone())).await;
        let client = Client::new(adapter, &manager);
        for _ in 0..3 {
            emulator.push_token_fault(TokenFault::Status(503));
        }
        emulator.expire_all_tokens();
        let url = me(&emulator);
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { client.get(&url).await })
            })
            .collect();
        for outcome in burst {
            match outcome.await.unwrap() {
                Err(error) => assert!(error.is_transient(), "{error:?}"),
                Ok(status) => panic!("unexpected {status}"),
            }
        }
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        for attempt in 2..=3 {
            clock.advance(BACKOFF_MAX);
            let error = client.get(&url).await.unwrap_err();
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(emulator.stats().refresh_token_grants, attempt);
        }
        clock.advance(BACKOFF_MAX);
        assert_eq!(client.get(&url).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 4, "3 failures, then success: {stats:?}");
    }
}

scenario! {
    /// A 429 on refresh: its `Retry-After` (1 s, longer than the configured back-off)
    /// holds every request without a token call, to the millisecond; then the refresh
    /// works.
    #[tokio::test]
    async fn rate_limited_refresh_waits_for_retry_after(adapter) {
        let emulator = Emulator::start().await;
        let clock = frozen_clock();
        let manager = authorized_manager(&emulator, |builder| builder.clock(clock.clone())).await;
        let client = Client::new(adapter, &manager);
        emulator.push_token_fault(TokenFault::RateLimited { retry_after_secs: 1 });
        emulator.expire_all_tokens();
        let url = me(&emulator);
        let first = client.get(&url).await.unwrap_err();
        assert_eq!(first.retry_after(), Some(Duration::from_secs(1)));
        let backing_off = |outcome| match outcome {
            Err(AuthError::BackingOff { retry_in, .. }) => retry_in,
            other => panic!("unexpected {other:?}"),
        };
        for _ in 0..10 {
            assert_eq!(backing_off(client.get(&url).await), Duration::from_secs(1));
        }
        clock.advance(Duration::from_millis(999));
        assert_eq!(backing_off(client.get(&url).await), Duration::from_millis(1));
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        clock.advance(Duration::from_millis(1));
        assert_eq!(client.get(&url).await.unwrap(), StatusCode::OK);
        assert_eq!(emulator.stats().refresh_token_grants, 2);
    }
}

scenario! {
    /// A token endpoint that never answers: the refresh times out, every waiter is
    /// released with a typed error, and the refresh token is still good afterwards.
    #[tokio::test]
    async fn a_hanging_token_endpoint_times_out_and_releases_every_waiter(adapter) {
        let emulator = Emulator::start().await;
        let clock = frozen_clock();
        let manager =
            authorized_manager_with_timeout(&emulator, Duration::from_millis(300), |builder| {
                builder.clock(clock.clone())
            })
            .await;
        let client = Client::new(adapter, &manager);
        emulator.push_token_fault(TokenFault::Hang);
        emulator.expire_all_tokens();
        let url = me(&emulator);
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { client.get(&url).await })
            })
            .collect();
        let mut timed_out = 0;
        for waiter in waiters {
            match waiter.await.unwrap() {
                Err(AuthError::Transport(error)) => {
                    assert_eq!(error.kind(), TransportErrorKind::Timeout);
                    timed_out += 1;
                }
                Err(AuthError::BackingOff { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(timed_out >= 1);
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        // The hang was a proxy in front of Procore: the refresh token is still good.
        clock.advance(BACKOFF_MAX);
        assert_eq!(client.get(&url).await.unwrap(), StatusCode::OK);
        assert_eq!(emulator.stats().refresh_token_grants, 2);
    }
}

/// A refresh answered with `fault` fails with an error that `check` accepts.
async fn malformed_token_response(
    adapter: Adapter,
    fault: TokenFault,
    check: fn(&AuthError) -> bool,
) {
    let emulator = Emulator::start().await;
    let manager = authorized_manager(&emulator, |builder| builder).await;
    let client = Client::new(adapter, &manager);
    emulator.push_token_fault(fault.clone());
    emulator.expire_all_tokens();
    let error = client.get(&me(&emulator)).await.unwrap_err();
    assert!(check(&error), "{fault:?}: {error:?}");
}

scenario! {
    /// A truncated JSON body is an `InvalidResponse`.
    #[tokio::test]
    async fn malformed_token_json_is_a_typed_error(adapter) {
        malformed_token_response(adapter, TokenFault::MalformedJson, |error| {
            matches!(error, AuthError::InvalidResponse { .. })
        })
        .await;
    }
}

scenario! {
    /// A token body without `access_token` is an `InvalidResponse`.
    #[tokio::test]
    async fn a_token_response_without_access_token_is_a_typed_error(adapter) {
        malformed_token_response(adapter, TokenFault::MissingAccessToken, |error| {
            matches!(error, AuthError::InvalidResponse { .. })
        })
        .await;
    }
}

scenario! {
    /// A 10 MiB token body is refused unparsed: `ResponseTooLarge`.
    #[tokio::test]
    async fn a_huge_token_response_is_a_typed_error(adapter) {
        malformed_token_response(adapter, TokenFault::HugeBody { bytes: 10 << 20 }, |error| {
            matches!(error, AuthError::ResponseTooLarge { .. })
        })
        .await;
    }
}

/// With the server's clock `offset_secs` off: no refresh while the token is good, and
/// exactly one after it is dropped.
async fn server_clock_off(adapter: Adapter, offset_secs: i64) {
    let emulator = Emulator::builder()
        .clock_offset_secs(offset_secs)
        .start()
        .await;
    let manager = authorized_manager(&emulator, |builder| builder).await;
    let client = Client::new(adapter, &manager);
    let url = me(&emulator);
    for _ in 0..20 {
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
    }
    assert_eq!(emulator.stats().refresh_token_grants, 0);
    emulator.expire_all_tokens();
    for _ in 0..20 {
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
    }
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

scenario! {
    /// A server clock ten minutes behind causes no refresh loop.
    #[tokio::test]
    async fn a_server_clock_ten_minutes_behind_causes_no_refresh_loop(adapter) {
        server_clock_off(adapter, -600).await;
    }
}

scenario! {
    /// A server clock ten minutes ahead causes no refresh loop.
    #[tokio::test]
    async fn a_server_clock_ten_minutes_ahead_causes_no_refresh_loop(adapter) {
        server_clock_off(adapter, 600).await;
    }
}
