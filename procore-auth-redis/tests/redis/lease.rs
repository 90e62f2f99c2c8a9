//! Processes sharing one user through Redis refresh once between them.

use futures_util::future::join_all;
use procore_auth_core::{RefreshTokenGrant, TokenManager};
use procore_auth_redis::RedisStore;
use procore_auth_reqwest::ReqwestTransport;
use procore_auth_testkit::{Emulator, RedisServer};

use crate::processes::{oauth, user_token};

/// A manager with its own Redis connection: as a separate process would have.
async fn replica(emulator: &Emulator, redis: &RedisServer) -> TokenManager {
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let grant = RefreshTokenGrant::new(
        oauth(emulator),
        ReqwestTransport::new().expect("a token transport"),
    );
    TokenManager::builder(grant)
        .store(store.for_key("user-1"))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_user_refresh_once_between_them() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().unwrap();
    let first = replica(&emulator, &redis).await;
    first.set_token(user_token(&emulator).await).await.unwrap();
    let mut replicas = vec![first];
    for _ in 0..3 {
        replicas.push(replica(&emulator, &redis).await);
    }
    for round in 1..=5 {
        // Every replica holds the current pair before the expiry (in the first round
        // it loads it from Redis). Loading it while a peer refreshes could load the
        // peer's new pair, which the emulator has not expired: reporting a 401 for
        // that one would ask for a second, legitimate refresh.
        let generations = join_all(
            replicas
                .iter()
                .map(|replica| async move { replica.bearer().await.unwrap().generation() }),
        )
        .await;
        emulator.expire_all_tokens();
        // Each replica learns of the expiry from a 401, as through an adapter.
        let replays = join_all(replicas.iter().zip(generations).map(
            |(replica, generation)| async move {
                join_all((0..25).map(|_| replica.rejected(generation))).await
            },
        ))
        .await;
        for replay in replays.into_iter().flatten() {
            assert!(replay.unwrap().is_some(), "every 401 gets a new token");
        }
        let stats = emulator.stats();
        assert_eq!(
            stats.refresh_token_grants, round,
            "one refresh per rotation"
        );
        assert_eq!(
            stats.token_calls,
            round + 1,
            "no refresh token presented twice"
        );
    }
}

/// A replica that learns of an expiry only after a peer's refresh has finished (and
/// saved a pair issued in the same second as the one it holds, so the issue times
/// cannot tell which is newer) adopts the peer's pair: Redis remembers that the
/// peer's save replaced the pair this replica would present, and answers its turn
/// with `PeerSaved`. It never presents the burnt refresh token (no `invalid_grant`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_behind_a_same_second_rotation_adopts_instead_of_presenting_a_burnt_token() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().unwrap();
    let ahead = replica(&emulator, &redis).await;
    ahead.set_token(user_token(&emulator).await).await.unwrap();
    let behind = replica(&emulator, &redis).await;
    let behind_generation = behind.bearer().await.unwrap().generation();
    for rotation in 1..=2 {
        let ahead_generation = ahead.bearer().await.unwrap().generation();
        emulator.expire_all_tokens();
        // `ahead` refreshes to the end before `behind` hears of the expiry.
        ahead.rejected(ahead_generation).await.unwrap().unwrap();
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, rotation);
        assert_eq!(stats.failed_token_calls, 0);
    }
    // Two rotations behind (almost always within one second).
    let adopted = behind.rejected(behind_generation).await.unwrap().unwrap();
    let stats = emulator.stats();
    assert_eq!(stats.refresh_token_grants, 2, "no refresh token presented");
    assert_eq!(stats.failed_token_calls, 0, "no invalid_grant");
    assert!(behind
        .token()
        .unwrap()
        .same_credentials(&ahead.token().unwrap()));
    assert_eq!(
        adopted.header_value(),
        ahead.bearer().await.unwrap().header_value()
    );
}
