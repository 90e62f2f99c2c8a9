//! The lease holder dies (SIGKILL) in the middle of its refresh.

use std::time::Duration;

use procore_auth_testkit::{Emulator, RedisServer, Route};

use crate::processes::{
    eventually, fire_all, lease_held, refresh_of, seed, stored, BlackHole, ChildConfig, Fired,
    Replica,
};

/// Short, so that a dead holder is taken over quickly.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// Processes that outlive the holder.
const SURVIVORS: usize = 3;
/// Concurrent requests per survivor.
const REQUESTS: usize = 20;

/// Issue 13, takeover (a): the lease holder is killed (SIGKILL) **before** its refresh
/// request reached Procore.
///
/// How: the holder is a real replica whose token endpoint is a black hole (a port
/// that accepts the connection and never answers; its API calls go to the emulator),
/// so it runs the library's own refresh path: it takes the lease, re-reads the store,
/// sends the refresh request, and waits, its lease kept alive. The emulator has seen
/// no token call when the holder is killed: the refresh token is still live.
///
/// Asserted: while the holder lives, the survivors (whose requests all got 401)
/// present nothing; once it is killed its lease runs out (1 s TTL, no longer
/// extended) and exactly one survivor refreshes: 1 refresh grant, no failed token
/// call, every survivor request succeeds, and every survivor ends on the stored pair,
/// which is the one that refresh produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_killed_before_its_refresh_reached_procore_is_taken_over_after_the_lease_ttl() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().expect("redis-server starts");
    let first = seed(&emulator, &redis).await;
    let black_hole = BlackHole::start();
    let config = ChildConfig::new(&emulator, &redis).lease_ttl(LEASE_TTL);
    let mut holder = Replica::spawn("holder", &config.clone().auth_url(black_hole.url())).await;
    let mut survivors = Replica::spawn_many("survivor-", SURVIVORS, &config).await;
    assert_eq!(holder.fire(1).await.ok, 1);
    assert_eq!(Fired::total(&fire_all(&mut survivors, 1).await).ok, 3);

    emulator.expire_all_tokens();
    holder.start_fire(1).await;
    eventually(
        "the holder takes the lease and sends its refresh",
        || async { black_hole.accepted() >= 1 && lease_held(&redis).await },
    )
    .await;
    assert_eq!(black_hole.accepted(), 1, "one refresh request");
    for survivor in &mut survivors {
        survivor.start_fire(REQUESTS).await;
    }
    // The survivors' requests get 401s and wait for the holder's refresh: give them
    // time to (wrongly) present the refresh token themselves.
    tokio::time::sleep(LEASE_TTL).await;
    let stats = emulator.stats();
    assert_eq!(
        stats.token_calls, 1,
        "only the code exchange: nothing presented"
    );
    assert!(lease_held(&redis).await, "the live holder keeps its lease");

    holder.kill().await;
    let mut fired = Vec::new();
    for survivor in &mut survivors {
        fired.push(survivor.fired().await);
    }
    let total = Fired::total(&fired);
    assert_eq!(
        total.ok,
        (SURVIVORS * REQUESTS) as u64,
        "every survivor request succeeds: {fired:?}"
    );
    let stats = emulator.stats();
    assert_eq!(
        stats.refresh_token_grants, 1,
        "one survivor refreshed, once"
    );
    assert_eq!(stats.failed_token_calls, 0);
    assert_eq!(stats.consumed_refresh_tokens, vec![refresh_of(&first)]);
    let newest = refresh_of(&stored(&redis).await.expect("a stored pair"));
    assert_ne!(newest, refresh_of(&first));
    for survivor in &mut survivors {
        assert_eq!(survivor.refresh_token().await, newest, "on the newest pair");
    }
}

/// Issue 13, takeover (b): the lease holder is killed (SIGKILL) **after** Procore
/// rotated the pair but before its response arrived, so before the save: Procore's
/// documented lost-response case. The emulator's token latency holds the response
/// back after the rotation took effect; the test kills the holder as soon as the
/// emulator's counters show the grant.
///
/// The new pair is lost with the holder and the stored refresh token is burnt: no
/// process can refresh any more, and the user must authorize again. Asserted: the
/// survivors make exactly **one** refresh attempt between them (one token call,
/// answered `invalid_grant`), after the dead holder's lease ran out; the one that
/// made it gets `ReauthorizationRequired` from Procore's answer, the others get it
/// without a token call (Redis remembers the refused refresh token: `PeerRefused`);
/// and they do not loop: for the next seconds, with the store re-read every 200 ms,
/// more requests fail the same way and no token call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_killed_after_procore_rotated_leaves_survivors_one_refused_attempt_and_no_loop() {
    let emulator = Emulator::builder()
        .latency(Route::Token, Duration::from_millis(1500))
        .start()
        .await;
    let redis = RedisServer::start().expect("redis-server starts");
    let first = seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis)
        .lease_ttl(LEASE_TTL)
        .store_recheck(Duration::from_millis(200))
        .backoff(Duration::from_millis(100));
    let mut holder = Replica::spawn("holder", &config).await;
    let mut survivors = Replica::spawn_many("survivor-", SURVIVORS, &config).await;
    assert_eq!(holder.fire(1).await.ok, 1);
    assert_eq!(Fired::total(&fire_all(&mut survivors, 1).await).ok, 3);

    emulator.expire_all_tokens();
    holder.start_fire(1).await;
    eventually("Procore rotates the holder's refresh token", || async {
        emulator.stats().refresh_token_grants == 1
    })
    .await;
    holder.kill().await;
    assert_eq!(
        stored(&redis).await.map(|token| refresh_of(&token)),
        Some(refresh_of(&first)),
        "the holder died before saving"
    );
    let before = emulator.stats();

    let fired = fire_all(&mut survivors, REQUESTS).await;
    let total = Fired::total(&fired);
    assert_eq!(
        total.reauth,
        (SURVIVORS * REQUESTS) as u64,
        "every request fails with ReauthorizationRequired: {fired:?}"
    );
    let stats = emulator.stats();
    assert_eq!(
        stats.token_calls,
        before.token_calls + 1,
        "exactly one refresh attempt between the survivors"
    );
    assert_eq!(stats.refresh_token_grants, 2);
    assert_eq!(
        stats.failed_token_calls, 1,
        "answered invalid_grant: the refresh token was burnt"
    );
    let told_by_procore = fired.iter().filter(|one| one.peer_refused == 0).count();
    let told_by_redis = fired
        .iter()
        .filter(|one| one.peer_refused == REQUESTS as u64)
        .count();
    assert_eq!(
        (told_by_procore, told_by_redis),
        (1, SURVIVORS - 1),
        "one survivor presented it, the others learnt the answer from Redis: {fired:?}"
    );

    // No loop: more requests over the next seconds, the store re-read every 200 ms.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = Fired::total(&fire_all(&mut survivors, 5).await);
        assert_eq!(again.reauth, (SURVIVORS * 5) as u64, "{again:?}");
    }
    assert_eq!(
        emulator.stats().token_calls,
        stats.token_calls,
        "no token call after the refusal"
    );
}
