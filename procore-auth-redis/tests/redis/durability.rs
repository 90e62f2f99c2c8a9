//! A rotated refresh token survives a Redis crash when Redis persists it.

use procore_auth_testkit::{Emulator, RedisServer};

use crate::processes::{refresh_of, seed, stored, ChildConfig, Replica};

/// Issue 13, durability: Redis runs with the append-only file on (the fixture uses
/// `appendfsync always`; `everysec` also survives a crash of the Redis process, as
/// here, since every write reaches the kernel before the reply; it can lose the last
/// second only if the machine itself goes down). A process rotates the pair; right
/// after the rotation Redis is killed with SIGKILL, and so is the process (its memory
/// is not a second copy). Redis restarts on the same data directory: the newest
/// refresh token is still stored, and a new process loads it and refreshes with it
/// successfully (no `invalid_grant`).
///
/// The control at the end shows what the test guards against: the same crash without
/// the append-only file loses the pair, and the user would have to sign in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_token_survives_a_redis_crash_with_the_append_only_file() {
    let emulator = Emulator::start().await;
    let mut redis = RedisServer::builder()
        .append_only(true)
        .start()
        .expect("redis-server starts");
    let first = seed(&emulator, &redis).await;
    let config = ChildConfig::new(&emulator, &redis);
    let mut rotator = Replica::spawn("rotator", &config).await;
    emulator.expire_all_tokens();
    assert_eq!(rotator.fire(10).await.ok, 10);
    assert_eq!(emulator.stats().refresh_token_grants, 1);
    let newest = rotator.refresh_token().await;
    assert_ne!(newest, refresh_of(&first));

    redis.kill();
    rotator.kill().await;
    redis.restart().expect("redis-server restarts");
    assert_eq!(
        stored(&redis).await.map(|token| refresh_of(&token)),
        Some(newest.clone()),
        "the newest refresh token survived the crash"
    );

    let mut newcomer = Replica::spawn("newcomer", &config).await;
    emulator.expire_all_tokens();
    assert_eq!(newcomer.fire(10).await.ok, 10);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 2);
    assert_eq!(stats.failed_token_calls, 0);
    assert_eq!(
        stats.consumed_refresh_tokens,
        vec![refresh_of(&first), newest],
        "the newcomer refreshed with the surviving refresh token"
    );

    // Control: without the append-only file the same crash loses the pair.
    let mut volatile = RedisServer::start().expect("redis-server starts");
    seed(&emulator, &volatile).await;
    volatile.kill();
    volatile.restart().expect("redis-server restarts");
    assert!(
        stored(&volatile).await.is_none(),
        "lost without persistence"
    );
}
