//! Natural expiry: short-lived tokens used continuously, with a server that ends them
//! before the client expects.

use std::time::Duration;

use http::StatusCode;
use procore_auth_conformance::{authorized_manager, me, scenario, Client};
use procore_auth_testkit::Emulator;
use tokio::time::Instant;

/// The access tokens' lifetime, as `expires_in` claims it.
const LIFETIME: Duration = Duration::from_secs(2);

/// How long the workers keep sending.
const RUN: Duration = Duration::from_secs(15);

/// Concurrent callers.
const WORKERS: usize = 4;

/// Each worker's pause between two requests.
const PAUSE: Duration = Duration::from_millis(25);

/// A bound on each worker's requests, should the clock misbehave: the pauses alone
/// take the whole run.
const MAX_REQUESTS_PER_WORKER: u128 = RUN.as_millis() / PAUSE.as_millis();

/// What one worker saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    unauthorized: u64,
    other_statuses: Vec<StatusCode>,
    errors: Vec<String>,
}

scenario! {
    /// Tokens live 2 s, and the server keeps issue times in whole seconds and sends no
    /// `created_at`: each token dies up to 1 s before the client's estimate (receive
    /// time + `expires_in`), sometimes before its proactive refresh (at 1.8 s: the skew
    /// is a tenth of the lifetime). Four callers use the API for 15 s: the 401s the
    /// early deaths cause (there must be some, or the scenario proves nothing) are all
    /// absorbed by a refresh and a replay, and the refreshes stay close to one per
    /// token lifetime.
    ///
    /// Runs for real time: the point is natural expiry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn natural_expiry_with_tokens_the_server_ends_early_returns_no_401s(adapter) {
        let emulator = Emulator::builder()
            .access_token_lifetime(LIFETIME)
            .floor_issue_times(true)
            .start()
            .await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);

        let deadline = Instant::now() + RUN;
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (client, me) = (client.clone(), me.clone());
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    for _ in 0..MAX_REQUESTS_PER_WORKER {
                        if Instant::now() >= deadline {
                            break;
                        }
                        match client.get(&me).await {
                            Ok(StatusCode::OK) => seen.ok += 1,
                            Ok(StatusCode::UNAUTHORIZED) => seen.unauthorized += 1,
                            Ok(status) => seen.other_statuses.push(status),
                            Err(error) => seen.errors.push(format!("{error:?}")),
                        }
                        tokio::time::sleep(PAUSE).await;
                    }
                    seen
                })
            })
            .collect();
        let mut seen = Vec::with_capacity(WORKERS);
        for worker in workers {
            seen.push(worker.await.unwrap());
        }
        let stats = emulator.stats();
        let metrics = manager.metrics();
        let requests: u64 = seen.iter().map(|worker| worker.ok).sum();
        eprintln!(
            "{}: {requests} 200s, {} 401s absorbed, {} refreshes",
            adapter.name(),
            stats.unauthorized_served,
            stats.refresh_token_grants
        );

        // What reached the callers: only 200s.
        for worker in &seen {
            assert!(worker.ok > 0, "{seen:?}");
            assert_eq!(worker.unauthorized, 0, "{seen:?} {stats:?} {metrics:?}");
            assert!(worker.other_statuses.is_empty(), "{seen:?}");
            assert!(worker.errors.is_empty(), "{seen:?}");
        }
        // The early deaths were hit, and absorbed: every 401 the server served was
        // reported to the manager and replayed.
        assert!(stats.unauthorized_served >= 1, "no token died early: {stats:?}");
        assert_eq!(metrics.rejections, stats.unauthorized_served, "{stats:?} {metrics:?}");
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");

        // Refresh bounds. Lower: 15 s of continuous use outlives at least
        // 15 s / 2 s = 7 tokens (the first from the code exchange); half of that
        // leaves room for a slow machine.
        let run = RUN.as_secs();
        let lifetime = LIFETIME.as_secs();
        let lower = run / lifetime / 2;
        // Upper: a token is replaced either proactively, at the earliest 1.8 s after
        // its request was sent (the client's estimate, less the skew), or after a 401,
        // which the server serves only once it has expired the token, more than 1 s
        // after minting it (its issue time floored by under a second, plus 2 s). Each
        // token is in use for more than (lifetime - 1 s) then: at most
        // 15 s / 1 s + 1 refreshes, plus 2 for the edges of the run. A refresh per
        // rejected request, or a refresh loop, would exceed that.
        let upper = run / (lifetime - 1) + 1 + 2;
        assert!(
            (lower..=upper).contains(&stats.refresh_token_grants),
            "{} refreshes, expected {lower}..={upper}: {stats:?} {metrics:?}",
            stats.refresh_token_grants
        );
        // And no refresh without cause: each was due to a 401 (several 401s with one
        // token share one refresh) or to a token the client thought about to expire,
        // 1.8 s after sending for it (lifetime less a tenth), so at most one such per
        // 1.8 s, plus the first, plus 2 for the edges of the run.
        let proactive_interval = LIFETIME - LIFETIME / 10;
        let proactive = u64::try_from(RUN.as_millis() / proactive_interval.as_millis()).unwrap() + 1;
        assert!(
            stats.refresh_token_grants <= stats.unauthorized_served + proactive + 2,
            "{} refreshes, {} 401s, up to {proactive} proactive: {stats:?} {metrics:?}",
            stats.refresh_token_grants,
            stats.unauthorized_served
        );
        assert_eq!(metrics.refreshes, stats.refresh_token_grants, "{metrics:?}");
    }
}
