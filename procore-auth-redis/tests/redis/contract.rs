//! The store contract: per-key compare-and-swap, clearing, and corrupt data.

use std::time::{Duration, UNIX_EPOCH};

use procore_auth_core::{
    AccessToken, KeyedTokenStore, RefreshOutcome, RefreshToken, RefreshTurn, StoreError, Token,
};
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

fn issued(access: &str, refresh: &str, issued_at: u64) -> Token {
    Token::new(
        AccessToken::new(access),
        Some(RefreshToken::new(refresh)),
        UNIX_EPOCH + Duration::from_secs(issued_at),
        Some(UNIX_EPOCH + Duration::from_secs(issued_at + 5400)),
    )
    .unwrap()
}

/// Whether `store` lets a process present `presenting`'s refresh token now: `Go`
/// (the lease, released again), `PeerSaved` or `PeerRefused`.
async fn turn(store: &RedisStore, key: &String, presenting: &Token) -> &'static str {
    match store.begin_refresh(key, Some(presenting)).await.unwrap() {
        RefreshTurn::Go(lease) => {
            if let Some(lease) = lease {
                lease.end(RefreshOutcome::Unchanged).await;
            }
            "go"
        }
        RefreshTurn::PeerSaved => "peer saved",
        RefreshTurn::PeerRefused => "peer refused",
        _ => "other",
    }
}

/// A save remembers the refresh token of the pair it replaced, so a process that still
/// holds that pair is told to adopt the stored one (`PeerSaved`) instead of presenting
/// a burnt refresh token, even when both pairs carry the same issue second; a process
/// holding a pair the store never replaced (the store lags behind it, or holds an
/// older pair) still gets its turn, so it is never stuck.
#[tokio::test]
async fn turns_for_replaced_pairs_are_answered_peer_saved() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(server.url()).await.unwrap();
    let key = "ann".to_owned();
    let second = 1_700_000_000;
    let (t1, t2, t3) = (
        issued("a1", "r1", second),
        issued("a2", "r2", second),
        issued("a3", "r3", second + 1),
    );
    store.save(&key, &t1, None).await.unwrap();
    assert_eq!(turn(&store, &key, &t1).await, "go");
    store.save(&key, &t2, Some(&t1)).await.unwrap();
    assert_eq!(turn(&store, &key, &t1).await, "peer saved", "same second");
    assert_eq!(turn(&store, &key, &t2).await, "go", "the stored pair");
    store.save(&key, &t3, Some(&t2)).await.unwrap();
    assert_eq!(turn(&store, &key, &t1).await, "peer saved", "two behind");
    assert_eq!(turn(&store, &key, &t2).await, "peer saved");

    // A process ahead of the store (its own save failed): its turn comes.
    let ahead = issued("a4", "r4", second + 2);
    assert_eq!(turn(&store, &key, &ahead).await, "go");
    // A pair stored over the one presented is its successor, whatever its issue
    // time says (clocks disagree; the store's order is the rotation's): the manager
    // adopts whatever pair differs after `PeerSaved`, so this never loops.
    let old = issued("a0", "r0", second - 100);
    store.save(&key, &old, None).await.unwrap();
    assert_eq!(turn(&store, &key, &t3).await, "peer saved");

    // Clearing forgets the replaced pairs too.
    store.clear(&key).await.unwrap();
    store.save(&key, &t3, None).await.unwrap();
    assert_eq!(turn(&store, &key, &t1).await, "go");
}
