//! A bounded soak: 100 workers for `SOAK_SECONDS` (default 60) against an emulator
//! whose tokens live 2 seconds, with random injected API faults: 503s, which pass
//! through to the caller, and one-off 401s, which the middleware absorbs with a
//! refresh and replay (a 401 injected into the replay itself passes through).
//! Neither may show up more often than it was injected; any other failure fails the soak. Ignored by default;
//! `scripts/soak.sh` runs it in release mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procore_auth_core::{AuthorizationCode, RefreshTokenGrant, TokenManager};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{ApiFault, Emulator};
use reqwest::StatusCode;

use super::{client, oauth};

const WORKERS: usize = 100;
const LIFETIME: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    passed_unavailable: AtomicU64,
    passed_unauthorized: AtomicU64,
    failed: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test (about a minute): run scripts/soak.sh"]
#[allow(clippy::disallowed_methods)] // the soak is bounded by wall time
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let emulator = Emulator::builder()
        .access_token_lifetime(LIFETIME)
        .start()
        .await;
    let oauth = oauth(&emulator);
    let transport = ReqwestTransport::new().unwrap();
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .build();
    let client = client(ProcoreAuthMiddleware::new(manager.clone()));
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, me, tally) = (client.clone(), me.clone(), Arc::clone(&tally));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let counter = match client.get(&me).send().await.map(|r| r.status()) {
                        Ok(StatusCode::OK) => &tally.ok,
                        Ok(StatusCode::SERVICE_UNAVAILABLE) => &tally.passed_unavailable,
                        Ok(StatusCode::UNAUTHORIZED) => &tally.passed_unauthorized,
                        Ok(_) | Err(_) => &tally.failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Random faults: a cheap LCG is enough to vary them.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let (mut injected_401, mut injected_503) = (0, 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        match seed >> 61 {
            0 => {
                emulator.push_api_fault(ApiFault::Unauthorized);
                injected_401 += 1;
            }
            1 => {
                emulator.push_api_fault(ApiFault::Unavailable {
                    retry_after_secs: 0,
                });
                injected_503 += 1;
            }
            _ => {}
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = emulator.stats();
    let (ok, unavailable, unauthorized, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.passed_unavailable.load(Ordering::Relaxed),
        tally.passed_unauthorized.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let expected_refreshes = elapsed.as_secs_f64() / LIFETIME.as_secs_f64();
    println!(
        "soak: {elapsed:.1?}, {WORKERS} workers: {ok} ok, {failed} failed; injected \
         {injected_401} 401s ({unauthorized} passed through, the rest absorbed) and \
         {injected_503} 503s ({unavailable} passed through); {} refreshes \
         (elapsed/lifetime = {expected_refreshes:.1}); metrics {:?}",
        stats.refresh_token_grants,
        manager.metrics()
    );
    assert_eq!(failed, 0);
    // A fault injected just before the deadline may never meet a request.
    assert!(unavailable <= injected_503);
    assert!(
        unauthorized < injected_401.max(1),
        "{unauthorized} 401s passed through"
    );
    // Procore's `created_at` is whole seconds and is floored (to stay safe), so a
    // token refreshed at t is due again at floor(t) + 0.9 × lifetime: refreshes come
    // every floor(0.9 × lifetime) seconds (1 s for 2-second tokens; for Procore's
    // 90-minute tokens the rounding is negligible). Each injected 401 adds at most one
    // refresh (the first 401 for a token refreshes it).
    let refreshes = stats.refresh_token_grants as f64;
    let period = (LIFETIME.as_secs_f64() * 0.9).floor().max(1.0);
    let proactive = elapsed.as_secs_f64() / period;
    let least = proactive * 0.8;
    let most = proactive + injected_401 as f64 + 2.0;
    println!("soak: expected {proactive:.0} proactive refreshes (one per {period} s), at most {most:.0} in all");
    assert!(
        refreshes >= least && refreshes <= most,
        "{refreshes} refreshes, expected {least:.1}..{most:.1}"
    );

    // No task outlives the run.
    drop((client, manager, emulator));
    let handle = tokio::runtime::Handle::current();
    for _ in 0..50 {
        if handle.metrics().num_alive_tasks() <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        handle.metrics().num_alive_tasks() <= tasks_before,
        "{} tasks still alive (before: {tasks_before})",
        handle.metrics().num_alive_tasks()
    );
}
