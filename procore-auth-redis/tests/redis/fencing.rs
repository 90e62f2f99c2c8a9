//! Fencing: what a process that lost the lease, or was refused, can no longer do.

use std::time::Duration;

use procore_auth_testkit::{Emulator, RedisServer, Route};

use crate::processes::{
    eventually, fire_all, lease_held, refresh_of, seed, stored, ChildConfig, Fired, Replica,
};

/// Issue 13, fencing: a lease holder stalls (SIGSTOP, as in a long pause of the
/// process or its VM) after Procore rotated its pair but before the answer reached
/// it (the emulator's token latency). Its lease is no longer extended and runs out
/// (500 ms TTL). Meanwhile a peer process saves a newer pair (the user authorized the
/// app again on that peer). The holder resumes (SIGCONT), gets its answer and saves
/// compare-and-swap against the pair it read: the save fails with
/// `StoreError::Conflict`, and the peer's newer pair stays in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_that_lost_its_lease_never_overwrites_a_peers_newer_pair() {
    let emulator = Emulator::builder()
        .latency(Route::Token, Duration::from_millis(1500))
        .start()
        .await;
    let redis = RedisServer::start().expect("redis-server starts");
    let first = seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis).lease_ttl(Duration::from_millis(500));
    let mut holder = Replica::spawn("holder", &config).await;
    let mut peer = Replica::spawn("peer", &config).await;
    assert_eq!(holder.fire(1).await.ok, 1);
    assert_eq!(peer.fire(1).await.ok, 1);

    emulator.expire_all_tokens();
    holder.start_fire(1).await;
    eventually("Procore rotates the holder's refresh token", || async {
        emulator.stats().refresh_token_grants == 1
    })
    .await;
    holder.stop();
    eventually("the stalled holder's lease runs out", || async {
        !lease_held(&redis).await
    })
    .await;
    let code = emulator.authorize_code_for(emulator.default_user(), "http://localhost");
    peer.authorize(&code).await;
    let newer = refresh_of(&stored(&redis).await.expect("the peer's pair"));
    assert_ne!(newer, refresh_of(&first));

    holder.resume();
    let fired = holder.fired().await;
    assert_eq!(
        fired.ok, 1,
        "the holder still uses its own new pair: {fired:?}"
    );
    assert_eq!(
        holder.store_error().await,
        "conflict",
        "its save was refused"
    );
    assert_eq!(
        stored(&redis).await.map(|token| refresh_of(&token)),
        Some(newer),
        "the peer's newer pair was not overwritten"
    );
    assert_ne!(holder.refresh_token().await, refresh_of(&first));
    assert_eq!(emulator.stats().refresh_token_grants, 1);
}

/// Issue 13, fencing: a refresh token that Procore refused is never presented again
/// by a peer. The user's tokens are revoked at Procore; three processes get 401s at
/// once; exactly one presents the stored refresh token and is answered
/// `invalid_grant`; the two others, and a process started afterwards, learn it from
/// Redis (`PeerRefused`) and get `ReauthorizationRequired` without a token call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_token_is_never_presented_again_by_a_peer() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().expect("redis-server starts");
    seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis);
    let mut fleet = Replica::spawn_many("replica-", 3, &config).await;
    assert_eq!(Fired::total(&fire_all(&mut fleet, 1).await).ok, 3);

    emulator.revoke_all_tokens();
    let fired = fire_all(&mut fleet, 10).await;
    assert_eq!(Fired::total(&fired).reauth, 30, "{fired:?}");
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1, "presented once");
    assert_eq!(stats.failed_token_calls, 1, "exactly one invalid_grant");
    let told_by_redis = fired.iter().filter(|one| one.peer_refused == 10).count();
    assert_eq!(told_by_redis, 2, "{fired:?}");

    let mut newcomer = Replica::spawn("newcomer", &config).await;
    let late = newcomer.fire(5).await;
    assert_eq!(late.peer_refused, 5, "{late:?}");
    assert_eq!(
        emulator.stats().token_calls,
        stats.token_calls,
        "never presented again"
    );
}
