//! A fleet of processes sharing one Procore user refreshes once per rotation.

use std::collections::HashSet;

use procore_auth_testkit::{Emulator, RedisServer};

use crate::processes::{fire_all, refresh_of, seed, stored, ChildConfig, Fired, Replica};

/// Processes in the fleet.
const PROCESSES: usize = 8;
/// Concurrent requests per process after the first forced expiry.
const BURST: usize = 100;
/// Rotations in a row after the first.
const ROTATIONS: u64 = 20;
/// Concurrent requests per process in each of those rotations.
const ROUND_REQUESTS: usize = 10;

/// Issue 13: 8 processes (this test binary, re-executed) share one user through
/// Redis. After a forced expiry each fires 100 concurrent requests: every one of the
/// 800 gets a 401, and the fleet refreshes exactly once between them (the lease), the
/// other seven processes adopting the pair the one holder saved; all 800 requests
/// succeed on their replay. Then 20 rotations in a row, each a forced expiry and a
/// burst from every process: exactly one refresh grant per rotation, and no refresh
/// token is ever presented twice (the emulator answered no `invalid_grant`, no token
/// call failed). At the end every process holds the stored pair.
///
/// Without the lease every process presents the same refresh token: 8 grants, 7 of
/// them `invalid_grant`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_refresh_once_per_rotation_between_them() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().expect("redis-server starts");
    let first = seed(&emulator, &redis).await;
    let mut fleet =
        Replica::spawn_many("replica-", PROCESSES, &ChildConfig::new(&emulator, &redis)).await;

    // Each process loads the pair from Redis and uses it: no token call.
    let warm = Fired::total(&fire_all(&mut fleet, 1).await);
    assert_eq!(warm.ok, PROCESSES as u64, "{warm:?}");
    assert_eq!(emulator.stats().token_calls, 1, "only the code exchange");

    emulator.expire_all_tokens();
    let burst = fire_all(&mut fleet, BURST).await;
    let total = Fired::total(&burst);
    assert_eq!(
        total.ok,
        (PROCESSES * BURST) as u64,
        "every request succeeds: {burst:?}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "one refresh for 8 processes");
    assert_eq!(stats.failed_token_calls, 0, "no invalid_grant");
    assert_eq!(stats.consumed_refresh_tokens, vec![refresh_of(&first)]);

    for rotation in 1..=ROTATIONS {
        emulator.expire_all_tokens();
        let round = fire_all(&mut fleet, ROUND_REQUESTS).await;
        let total = Fired::total(&round);
        assert_eq!(
            total.ok,
            (PROCESSES * ROUND_REQUESTS) as u64,
            "rotation {rotation}: every request succeeds: {round:?}"
        );
        let stats = emulator.stats();
        assert_eq!(
            stats.refresh_token_grants,
            1 + rotation,
            "rotation {rotation}: one refresh grant per rotation ({} failed token calls; consumed: {:?})",
            stats.failed_token_calls,
            stats.consumed_refresh_tokens.iter().map(|t| &t[..8]).collect::<Vec<_>>()
        );
        assert_eq!(
            stats.failed_token_calls, 0,
            "rotation {rotation}: no invalid_grant"
        );
    }
    let stats = emulator.stats();
    assert_eq!(
        stats.token_calls,
        1 + 1 + ROTATIONS,
        "the code, then 21 refreshes"
    );
    let consumed: HashSet<&String> = stats.consumed_refresh_tokens.iter().collect();
    assert_eq!(
        consumed.len(),
        stats.consumed_refresh_tokens.len(),
        "no refresh token presented twice"
    );

    // Every process ends on the stored pair.
    let newest = refresh_of(&stored(&redis).await.expect("a stored pair"));
    for replica in &mut fleet {
        assert_eq!(replica.refresh_token().await, newest);
    }
}
