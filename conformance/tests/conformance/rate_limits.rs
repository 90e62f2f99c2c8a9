//! Procore's rate limits and the retries it allows, through each adapter: the budget
//! read from every response, requests held (or refused) while it is spent, and 429/503
//! retried only as `Retry-After` and the method allow. Timing is read from the
//! emulator's own record of when requests arrived, not from the client's clock.

use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::join_all;
use http::{Method, Request, StatusCode};
use procore_auth_conformance::{
    authorized_manager, me, scenario, tenant_registry, user_tokens, Client,
};
use procore_auth_core::{Jitter, RateLimitPolicy, RetryPolicy, X_RATE_LIMIT_RESET};
use procore_auth_testkit::{ApiFault, Emulator, UserId};

/// The emulator's budget per token in these scenarios…
const LIMIT: u64 = 50;
/// …per window.
const WINDOW: Duration = Duration::from_secs(10);
/// Requests fired at once: four windows' worth.
const REQUESTS: usize = 200;

async fn rate_limited_emulator() -> Emulator {
    Emulator::builder()
        .rate_limit(LIMIT, WINDOW)
        .record_api_log(true)
        .start()
        .await
}

async fn fire(client: &Client, url: &str, count: usize) -> Vec<StatusCode> {
    let requests = (0..count).map(|_| async {
        client
            .send(procore_auth_conformance::get(url))
            .await
            .expect("no authorization error")
            .status
    });
    join_all(requests).await
}

scenario! {
    /// Limit 50 per 10 s, 200 requests at once, `RateLimitPolicy::Wait`: none is
    /// answered 429; the emulator saw them in exactly four windows of 50 (it counts a
    /// window from its first request), so the client sent each window's budget and
    /// then waited for the reset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_the_reset_means_no_request_is_answered_429(adapter) {
        let emulator = rate_limited_emulator().await;
        // The last fifty wait through three resets.
        let wait = RateLimitPolicy::Wait { max_wait: WINDOW * 5 };
        let manager = authorized_manager(&emulator, |builder| builder.rate_limit(wait)).await;
        let client = Client::new(adapter, &manager);
        let statuses = fire(&client, &me(&emulator), REQUESTS).await;
        assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
        assert_eq!(emulator.stats().rate_limited_served, 0);

        let log = emulator.api_log();
        assert_eq!(log.len(), REQUESTS);
        let first = log[0].at;
        let mut per_window = std::collections::BTreeMap::new();
        for request in &log {
            let window = (request.at - first).as_millis() / WINDOW.as_millis();
            *per_window.entry(window).or_insert(0) += 1;
        }
        // Windows start at their first request, so a window's index by the first
        // request's clock may drift by the waits in between: count their sizes.
        let sizes: Vec<u64> = per_window.values().copied().collect();
        assert_eq!(sizes.iter().sum::<u64>(), REQUESTS as u64);
        assert!(sizes.len() >= 4, "four windows at least: {sizes:?}");
        assert!(sizes.iter().all(|size| *size <= LIMIT), "{sizes:?}");
    }
}

scenario! {
    /// The same run with the default `Observe`: the 429s reach the caller (150 of
    /// them), and the token's budget reads remaining 0 with the emulator's reset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn observing_lets_the_429s_through_and_reports_the_spent_budget(adapter) {
        let emulator = rate_limited_emulator().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let statuses = fire(&client, &me(&emulator), REQUESTS).await;
        let ok = statuses.iter().filter(|status| **status == StatusCode::OK).count();
        let limited = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!((ok, limited), (LIMIT as usize, REQUESTS - LIMIT as usize));
        assert_eq!(emulator.stats().rate_limited_served, (REQUESTS - LIMIT as usize) as u64);

        // The reset the emulator sends now.
        let reply = client.send(procore_auth_conformance::get(&me(&emulator))).await.unwrap();
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        let reset: u64 = reply.headers[X_RATE_LIMIT_RESET].to_str().unwrap().parse().unwrap();
        let budget = manager.rate_limit().expect("a budget was reported");
        assert_eq!(budget.remaining, 0);
        assert_eq!(budget.limit, LIMIT);
        assert_eq!(budget.reset_at, UNIX_EPOCH + Duration::from_secs(reset));
    }
}

scenario! {
    /// `FailFast` with the budget spent: the request fails with `RateLimited` (its
    /// reset) without reaching the emulator.
    #[tokio::test]
    async fn failing_fast_sends_nothing_once_the_budget_is_spent(adapter) {
        let emulator = Emulator::builder().rate_limit(2, WINDOW).start().await;
        let manager = authorized_manager(&emulator, |builder| {
            builder.rate_limit(RateLimitPolicy::FailFast)
        })
        .await;
        let client = Client::new(adapter, &manager);
        assert_eq!(fire(&client, &me(&emulator), 2).await, [StatusCode::OK; 2]);
        let sent = emulator.stats().api_calls;
        let error = client.get(&me(&emulator)).await.unwrap_err();
        let reset_at = manager.rate_limit().unwrap().reset_at;
        assert!(
            matches!(error, procore_auth_core::Error::RateLimited { reset_at: at } if at == reset_at),
            "{error:?}"
        );
        assert_eq!(emulator.stats().api_calls, sent, "nothing sent");
    }
}

/// A retry policy without jitter, so the wait is exactly the server's.
fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .jitter(Jitter::none())
}

scenario! {
    /// A 503 with `Retry-After: 2` on a GET is retried once, no sooner than 2 s later
    /// by the emulator's clock, and succeeds; on a POST it is returned (no retry).
    /// The retry layer sits outside the auth layer: the retry carries the token.
    #[tokio::test]
    async fn a_503_is_retried_after_retry_after_for_a_get_and_not_for_a_post(adapter) {
        let emulator = Emulator::builder().record_api_log(true).start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager.clone(), retries());
        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 2 });
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK);
        let log = emulator.api_log();
        assert_eq!(log.iter().map(|request| request.status).collect::<Vec<_>>(), [503, 200]);
        assert!(log[1].at - log[0].at >= Duration::from_secs(2), "{log:?}");
        assert_eq!(emulator.stats().unauthorized_served, 0, "the retry carried the token");

        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 2 });
        let echo = format!("{}/rest/v1.0/echo", emulator.base_url());
        let post = Request::builder()
            .method(Method::POST)
            .uri(&echo)
            .header("content-type", "text/plain")
            .body(bytes::Bytes::from_static(b"once"))
            .unwrap();
        let reply = client.send(post).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(emulator.api_log().len(), 3, "the POST went once");
    }
}

scenario! {
    /// A 401 inside the retry layer is the auth layer's (one refresh, one replay),
    /// not a failure to retry; a 503 after it is retried with the refreshed token.
    #[tokio::test]
    async fn retries_outside_authorization_see_neither_the_401_nor_a_stale_token(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::with_retries(adapter, manager.clone(), retries());
        emulator.expire_all_tokens();
        emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 0 });
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        // 503 (a fault answers before the token check), retried: 401, replayed: 200.
        assert_eq!(stats.api_calls, 3, "{stats:?}");
    }
}

scenario! {
    /// Two tenants: one spends its budget (its requests wait, as its policy says), the
    /// other's requests go through at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenant_s_spent_budget_does_not_hold_up_another(adapter) {
        let emulator = Emulator::builder().users(2).rate_limit(3, WINDOW).start().await;
        let users: Vec<UserId> = emulator.users();
        let registry = tenant_registry(adapter, &emulator, |_, builder| {
            builder.rate_limit(RateLimitPolicy::FailFast)
        })
        .build();
        for (user, token) in users.iter().zip(user_tokens(&emulator, &users).await) {
            registry.insert(*user, token).await.unwrap();
        }
        let client = Client::with_tokens(adapter, registry.clone());
        let (spent, other) = (users[0], users[1]);
        for _ in 0..3 {
            assert_eq!(client.get_as(&me(&emulator), spent).await.unwrap().status, StatusCode::OK);
        }
        let error = client.get_as(&me(&emulator), spent).await.unwrap_err();
        assert!(matches!(error, procore_auth_core::Error::RateLimited { .. }), "{error:?}");
        for _ in 0..3 {
            assert_eq!(client.get_as(&me(&emulator), other).await.unwrap().status, StatusCode::OK);
        }
        assert_eq!(emulator.user_stats(spent).rate_limited_served, 0);
        assert_eq!(emulator.user_stats(other).rate_limited_served, 0);
    }
}
