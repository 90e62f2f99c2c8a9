//! Processes sharing one user through Redis refresh once between them.

use futures_util::future::join_all;
use procore_auth_conformance::{oauth, token_transport, user_token, TOKEN_CALL_TIMEOUT};
use procore_auth_core::{RefreshTokenGrant, TokenManager};
use procore_auth_redis::RedisStore;
use procore_auth_testkit::{Emulator, RedisServer};

/// A manager with its own Redis connection: as a separate process would have.
async fn replica(emulator: &Emulator, redis: &RedisServer) -> TokenManager {
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let grant = RefreshTokenGrant::new(oauth(emulator), token_transport(TOKEN_CALL_TIMEOUT));
    TokenManager::builder(grant)
        .store(store.for_key("user-1"))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_user_refresh_once_between_them() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().unwrap();
    let first = replica(&emulator, &redis).await;
    first
        .set_token(user_token(&emulator, emulator.default_user()).await)
        .await
        .unwrap();
    let mut replicas = vec![first];
    for _ in 0..3 {
        replicas.push(replica(&emulator, &redis).await);
    }
    for round in 1..=5 {
        emulator.expire_all_tokens();
        // Each replica learns of the expiry from a 401, as through an adapter.
        let replays = join_all(replicas.iter().map(|replica| async move {
            let generation = replica.bearer().await.unwrap().generation();
            join_all((0..25).map(|_| replica.rejected(generation))).await
        }))
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
