//! The store contract: per-key compare-and-swap, clearing, and corrupt data.

use std::time::{Duration, UNIX_EPOCH};

use procore_auth_core::{AccessToken, KeyedTokenStore, RefreshToken, StoreError, Token};
use procore_auth_redis::RedisStore;
use procore_auth_testkit::RedisServer;

fn token(access: &str, refresh: &str) -> Token {
    Token::new(
        AccessToken::new(access),
        Some(RefreshToken::new(refresh)),
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_005_400)),
    )
    .unwrap()
}

#[tokio::test]
async fn saves_compare_and_swap_per_key() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(server.url()).await.unwrap();
    let (ann, bob) = ("ann".to_owned(), "bob".to_owned());
    assert!(store.load(&ann).await.unwrap().is_none());
    let a1 = token("a1", "ra1");
    store.save(&ann, &a1, None).await.unwrap();
    store
        .save(&bob, &token("b1", "rb1"), Some(&a1))
        .await
        .unwrap();
    let a2 = token("a2", "ra2");
    store.save(&ann, &a2, Some(&a1)).await.unwrap();
    assert!(matches!(
        store.save(&ann, &token("a3", "ra3"), Some(&a1)).await,
        Err(StoreError::Conflict)
    ));
    assert!(store
        .load(&ann)
        .await
        .unwrap()
        .unwrap()
        .same_credentials(&a2));
    store.clear(&ann).await.unwrap();
    assert!(store.load(&ann).await.unwrap().is_none());
    assert!(store.load(&bob).await.unwrap().is_some());
}
