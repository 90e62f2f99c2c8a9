//! Adversarial scenarios for Procore's rate limits and the retries it allows (issue 14),
//! through each adapter against the emulator. Each is written to fail if the bug it
//! names exists; the ones marked "held" guard behaviour that was attacked and held.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, Request, StatusCode};
use procore_auth_conformance::{
    authorized_manager, me, scenario, tenant_registry, user_tokens, wait_until, Client,
};
use procore_auth_core::{Jitter, RateLimitPolicy, RetryPolicy};
use procore_auth_testkit::{ApiFault, Emulator, Route, UserId};

fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .jitter(Jitter::none())
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|seen| **seen == status).count()
}

scenario! {
    /// Clock skew: the client's clock is 3 s ahead of Procore's (the emulator's clock is
    /// 3 s behind). Limit 5 per 4 s, `Wait`. Procore's `X-Rate-Limit-Reset` is an absolute
    /// time on its clock, so the client believes the window ends 3 s before it does. Once
    /// that time passes, one request goes to learn the new window, is answered 429 with
    /// `Remaining: 0` and the same (by the client's clock, passed) reset, and that report
    /// replaces the provisional window: the next request goes at once, and so on. Twelve
    /// requests in a row: the seven after the first window's five are all answered 429
    /// within milliseconds, instead of at most about one per second of skew.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_clock_ahead_of_procore_does_not_set_off_a_429_storm(adapter) {
        let emulator = Emulator::builder()
            .rate_limit(5, Duration::from_secs(4))
            .clock_offset_secs(-3)
            .record_api_log(true)
            .start()
            .await;
        let wait = RateLimitPolicy::Wait { max_wait: Duration::from_secs(30) };
        let manager = authorized_manager(&emulator, |builder| builder.rate_limit(wait)).await;
        let client = Client::new(adapter, &manager);
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(client.get(&me(&emulator)).await.expect("no authorization error"));
        }
        let log: Vec<_> = emulator.api_log().iter().map(|entry| (entry.at, entry.status)).collect();
        let limited = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
        assert!(limited <= 4, "{limited} requests answered 429 while waiting: {log:?}");
    }
}

scenario! {
    /// "Fed from every response that carried our token": the token expired at Procore,
    /// the request is answered 401, the token is refreshed and the request replayed with
    /// the new token; the replay's 200 carries the new token's budget (limit 50, 49
    /// left). Neither adapter judges the replay's response, so its headers are dropped and
    /// the snapshot says nothing about the current token. (Under `Wait`, the next request
    /// must then probe the new token's budget again.)
    #[tokio::test]
    async fn the_replay_s_response_feeds_the_budget(adapter) {
        let emulator = Emulator::builder().rate_limit(50, Duration::from_secs(60)).start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        emulator.expire_all_tokens();
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK);
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        let budget = manager.rate_limit();
        assert_eq!(
            budget.map(|budget| (budget.limit, budget.remaining)),
            Some((50, 49)),
            "the replay's X-Rate-Limit-* headers were not recorded"
        );
    }
}

scenario! {
    /// Held (since e92a2f0; it failed at 5af842c): the acceptance run is timing
    /// dependent unless an unknown budget sends one request first. Each response comes
    /// 300 ms late, so all ten requests are authorized before the first report: with
    /// limit 5, `Wait` must still see no 429.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_fired_before_the_first_report_do_not_overrun_the_window(adapter) {
        let emulator = Emulator::builder()
            .rate_limit(5, Duration::from_secs(2))
            .latency(Route::Api, Duration::from_millis(300))
            .start()
            .await;
        let wait = RateLimitPolicy::Wait { max_wait: Duration::from_secs(20) };
        let manager = authorized_manager(&emulator, |builder| builder.rate_limit(wait)).await;
        let client = Client::new(adapter, &manager);
        let url = me(&emulator);
        let statuses = join_all((0..10).map(|_| client.get(&url))).await;
        let statuses: Vec<StatusCode> = statuses.into_iter().map(Result::unwrap).collect();
        assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 0, "{statuses:?}");
        assert_eq!(emulator.stats().rate_limited_served, 0);
    }
}

scenario! {
    /// Held: a retried request keeps its tenant. Two tenants; tenant 2's GET is answered
    /// 503 then retried: the retry carries tenant 2's token (the key in the extensions
    /// survives the retry) and tenant 1's token is never used.
    #[tokio::test]
    async fn a_retry_keeps_the_request_s_tenant(adapter) {
        let emulator = Emulator::builder().users(2).start().await;
        let users: Vec<UserId> = emulator.users();
        let registry = tenant_registry(adapter, &emulator, |_, builder| builder).build();
        for (user, token) in users.iter().zip(user_tokens(&emulator, &users).await) {
            registry.insert(*user, token).await.unwrap();
        }
        let client = Client::with_retries(adapter, registry.clone(), retries());
        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 0 });
        let reply = client.get_as(&me(&emulator), users[1]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["login"], emulator.user_login(users[1]));
        assert_eq!(emulator.user_stats(users[1]).api_calls, 2);
        assert_eq!(emulator.user_stats(users[0]).api_calls, 0);
    }
}

scenario! {
    /// Held: a request cancelled while the retry sleeps (503, `Retry-After: 2`) is not
    /// sent again.
    #[tokio::test]
    async fn a_request_cancelled_during_the_retry_s_sleep_is_not_sent_again(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager, retries());
        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 2 });
        let url = me(&emulator);
        let task = tokio::spawn(async move { client.get(&url).await });
        wait_until("the first attempt", || emulator.stats().api_calls == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(emulator.stats().api_calls, 1);
    }
}

scenario! {
    /// Held: absurd `Retry-After` values through the adapters. `u64::MAX` seconds: the
    /// 503 comes back at once (no hang, no panic); negative or garbage: the back-off,
    /// then the retry.
    #[tokio::test]
    async fn absurd_retry_after_values_neither_hang_nor_panic(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager, retries());
        emulator.push_api_fault(ApiFault::UnavailableRaw { retry_after: Some(u64::MAX.to_string()) });
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), client.get(&me(&emulator)))
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
        for garbage in ["-5", "Tue, 31 Feb 2024 25:61:61 GMT", "1.5"] {
            emulator.push_api_fault(ApiFault::UnavailableRaw { retry_after: Some(garbage.into()) });
            assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK, "{garbage}");
        }
    }
}

scenario! {
    /// Held: a spike-limit 429 (budget left in the window) is retried after its
    /// `Retry-After`, not before.
    #[tokio::test]
    async fn a_spike_429_with_budget_left_waits_for_retry_after(adapter) {
        let emulator = Emulator::builder()
            .spike_limit(1, Duration::from_secs(1))
            .record_api_log(true)
            .start()
            .await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager, retries());
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK);
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK);
        let log = emulator.api_log();
        let statuses: Vec<u16> = log.iter().map(|entry| entry.status).collect();
        assert_eq!(statuses, [200, 429, 200], "{log:?}");
        assert!(log[2].at - log[1].at >= Duration::from_millis(900), "{log:?}");
    }
}

scenario! {
    /// Held: a streamed body (not replayable) is sent once, even for a PUT answered 503.
    #[tokio::test]
    async fn a_streamed_body_is_sent_once(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager, retries());
        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 0 });
        let put = Request::builder()
            .method(Method::PUT)
            .uri(format!("{}/rest/v1.0/echo", emulator.base_url()))
            .body(vec![Bytes::from_static(b"chunk")])
            .unwrap();
        let reply = client.send_streaming(put).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(emulator.stats().api_calls, 1);
    }
}
