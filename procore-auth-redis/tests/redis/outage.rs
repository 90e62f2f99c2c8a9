//! Redis goes away (killed, or stops answering writes): requests keep using a valid
//! token, a refresh fails transiently without presenting anything, and everything
//! recovers when Redis is back.

use std::time::Duration;

use procore_auth_testkit::{Emulator, RedisServer};

use crate::processes::{fire_all, raw, seed, ChildConfig, Fired, Replica};

/// Processes in each test.
const PROCESSES: usize = 2;
/// The managers' back-off after a failed refresh (base = max, so one back-off is at
/// most this long whatever the jitter).
const BACKOFF: Duration = Duration::from_millis(300);

/// Issue 13: Redis is stopped (SIGKILL) for 5 s while the tokens are valid. Requests
/// read the token from memory and never touch Redis, so they keep flowing: every
/// 250 ms during the outage each process fires 10 requests, and none fails; no token
/// call is made. After Redis returns, a rotation works as usual (one refresh grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_five_seconds_while_tokens_are_valid_fails_no_request() {
    let emulator = Emulator::start().await;
    let mut redis = RedisServer::builder()
        .append_only(true)
        .start()
        .expect("redis-server starts");
    seed(&emulator, &redis).await;
    let mut fleet =
        Replica::spawn_many("replica-", PROCESSES, &ChildConfig::new(&emulator, &redis)).await;
    assert_eq!(
        Fired::total(&fire_all(&mut fleet, 1).await).ok,
        PROCESSES as u64
    );
    let before = emulator.stats();

    redis.kill();
    let outage = tokio::time::Instant::now();
    let mut during = Vec::new();
    let mut rounds = 0;
    while outage.elapsed() < Duration::from_secs(5) {
        during.extend(fire_all(&mut fleet, 10).await);
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    redis.restart().expect("redis-server restarts");
    let total = Fired::total(&during);
    assert_eq!(total.failed(), 0, "no request failed: {total:?}");
    assert_eq!(total.ok, rounds * (PROCESSES as u64) * 10, "{total:?}");
    assert!(rounds >= 2, "requests kept flowing during the outage");
    let stats = emulator.stats();
    assert_eq!(stats.api_calls, before.api_calls + total.ok);
    assert_eq!(stats.token_calls, before.token_calls, "no token call");

    emulator.expire_all_tokens();
    let after = Fired::total(&fire_all(&mut fleet, 10).await);
    assert_eq!(after.ok, (PROCESSES * 10) as u64, "{after:?}");
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

/// Issue 13: Redis is stopped (SIGKILL) across an expiry. The requests get 401s and
/// the refresh cannot take the lease, so it fails with a typed, transient error,
/// `Error::Store` (or, for requests during the back-off that follows,
/// `Error::BackingOff` after it), and no refresh token is presented: no token call,
/// however often the processes try. Once Redis is back (restarted, its data kept by
/// the append-only file), and one back-off has passed, every request succeeds at its
/// first try, after exactly one refresh for both processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_across_an_expiry_fails_transiently_then_recovers_within_one_backoff() {
    let emulator = Emulator::start().await;
    let mut redis = RedisServer::builder()
        .append_only(true)
        .start()
        .expect("redis-server starts");
    seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis).backoff(BACKOFF);
    let mut fleet = Replica::spawn_many("replica-", PROCESSES, &config).await;
    assert_eq!(
        Fired::total(&fire_all(&mut fleet, 1).await).ok,
        PROCESSES as u64
    );
    let before = emulator.stats();

    redis.kill();
    emulator.expire_all_tokens();
    for attempt in 0..3 {
        let fired = fire_all(&mut fleet, 10).await;
        let total = Fired::total(&fired);
        assert_eq!(total.ok, 0, "attempt {attempt}: {fired:?}");
        assert_eq!(
            total.store + total.backoff,
            (PROCESSES * 10) as u64,
            "attempt {attempt}: only transient store errors: {fired:?}"
        );
        for one in &fired {
            assert!(
                one.store >= 1,
                "attempt {attempt}: each process's refresh failed with Error::Store: {fired:?}"
            );
        }
        tokio::time::sleep(BACKOFF).await;
    }
    assert_eq!(
        emulator.stats().token_calls,
        before.token_calls,
        "no refresh token presented without the lease"
    );

    redis.restart().expect("redis-server restarts");
    tokio::time::sleep(BACKOFF).await;
    let fired = fire_all(&mut fleet, 10).await;
    assert_eq!(
        Fired::total(&fired).ok,
        (PROCESSES * 10) as u64,
        "recovered within one back-off: {fired:?}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "one refresh for both");
    assert_eq!(stats.failed_token_calls, 0);
}

/// Issue 13: Redis is unreachable for exactly the step that matters: it serves reads
/// (the store is loaded) but writes hang (`CLIENT PAUSE … WRITE`, as during a
/// failover), so `begin_refresh` cannot take the lease and times out. The refresh
/// fails with a transient `Error::Store` and **no refresh token is presented**: the
/// emulator sees no token call. When Redis answers again, the processes refresh once
/// between them (after the lease that the timed-out attempt may still have taken
/// runs out), and every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unresponsive_at_begin_refresh_presents_no_refresh_token() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().expect("redis-server starts");
    seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis)
        .backoff(BACKOFF)
        .lease_ttl(Duration::from_secs(1));
    let mut fleet = Replica::spawn_many("replica-", PROCESSES, &config).await;
    assert_eq!(
        Fired::total(&fire_all(&mut fleet, 1).await).ok,
        PROCESSES as u64
    );
    let before = emulator.stats();

    let mut admin = raw(&redis).await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg("30000")
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    emulator.expire_all_tokens();
    let fired = fire_all(&mut fleet, 10).await;
    let total = Fired::total(&fired);
    assert_eq!(total.ok, 0, "{fired:?}");
    assert_eq!(
        total.store + total.backoff,
        (PROCESSES * 10) as u64,
        "only transient store errors: {fired:?}"
    );
    assert_eq!(
        emulator.stats().token_calls,
        before.token_calls,
        "no refresh token presented without the lease"
    );

    let () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT UNPAUSE");
    tokio::time::sleep(BACKOFF).await;
    let fired = fire_all(&mut fleet, 10).await;
    assert_eq!(
        Fired::total(&fired).ok,
        (PROCESSES * 10) as u64,
        "recovered: {fired:?}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "one refresh for both");
    assert_eq!(stats.failed_token_calls, 0);
}
