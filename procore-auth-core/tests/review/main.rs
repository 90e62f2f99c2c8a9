//! Regressions found by an adversarial review of the v2 manager, against a fake
//! Procore token endpoint with single-use rotating refresh tokens.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use procore_auth_core::{
    AccessToken, BoxFuture, ClientSecret, Clock, Environment, Error, ManualClock, MemoryStore,
    OAuthClient, RefreshToken, RefreshTokenGrant, Spawn, StoreError, Token, TokenManager,
    TokenSource, TokenStore, Transport, TransportError,
};

/// Presenting the live refresh token rotates it (r0 → r1 → …, access a1, a2, …);
/// anything else gets `invalid_grant`.
#[derive(Debug, Default)]
struct Server {
    live: Mutex<Option<String>>,
    issued: AtomicU64,
    presented: Mutex<Vec<String>>,
    expires_in_next: Mutex<Option<u64>>,
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl Server {
    fn with_live(refresh: &str) -> Arc<Self> {
        let server = Arc::new(Self::default());
        *server.live.lock().unwrap() = Some(refresh.into());
        server
    }

    fn presented(&self) -> Vec<String> {
        self.presented.lock().unwrap().clone()
    }
}

#[derive(Debug, Clone)]
struct Fake(Arc<Server>);

impl Transport for Fake {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(async move {
            let server = &self.0;
            let presented = form_urlencoded::parse(request.body())
                .find(|(key, _)| key == "refresh_token")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            server.presented.lock().unwrap().push(presented.clone());
            let issued = {
                let mut live = server.live.lock().unwrap();
                (live.as_deref() == Some(presented.as_str())).then(|| {
                    let n = server.issued.fetch_add(1, Ordering::SeqCst) + 1;
                    *live = Some(format!("r{n}"));
                    n
                })
            };
            let Some(n) = issued else {
                return Ok(json(400, r#"{"error":"invalid_grant"}"#.into()));
            };
            let gate = server.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                drop(gate.acquire().await.unwrap());
            }
            let expires_in = server
                .expires_in_next
                .lock()
                .unwrap()
                .take()
                .unwrap_or(5400);
            Ok(json(
                200,
                format!(
                    r#"{{"access_token":"a{n}","token_type":"bearer","expires_in":{expires_in},"refresh_token":"r{n}"}}"#
                ),
            ))
        })
    }
}

fn json(status: u16, body: String) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .body(Bytes::from(body))
        .unwrap()
}

fn oauth() -> OAuthClient {
    OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"))
}

fn grant(server: &Arc<Server>) -> RefreshTokenGrant {
    RefreshTokenGrant::new(oauth(), Fake(Arc::clone(server)))
}

const T0: u64 = 1_700_000_000;

fn token_at(clock: &ManualClock, access: &str, refresh: &str) -> Token {
    let now = clock.now();
    let expires = now + Duration::from_secs(5400);
    Token::new(
        AccessToken::new(access),
        Some(RefreshToken::new(refresh)),
        now,
        Some(expires),
    )
    .unwrap()
}

fn access(manager: &TokenManager) -> Option<String> {
    manager
        .token()
        .map(|token| token.access_token().secret().to_owned())
}

/// A memory store whose next save can be made to fail.
#[derive(Debug, Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    fail_next_save: Arc<AtomicBool>,
}

impl TokenStore for Flaky {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.inner.load()
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.fail_next_save.swap(false, Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::from(std::io::Error::other("disk full"))) });
        }
        self.inner.save(token, expected)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_save_never_makes_the_store_s_older_pair_win_within_a_second() {
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("r0");
    let first = token_at(&clock, "a0", "r0");
    let store = Flaky {
        inner: MemoryStore::with_token(first.clone()),
        ..Flaky::default()
    };
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .store(store.clone())
        .token(first)
        .build();
    let g0 = manager.bearer().await.unwrap().generation();
    store.fail_next_save.store(true, Ordering::SeqCst);
    let g1 = manager.rejected(g0).await.unwrap().unwrap().generation(); // r0 → r1, not saved
    let g2 = manager.rejected(g1).await.unwrap().unwrap().generation(); // r1 → r2, same second
    manager.rejected(g2).await.unwrap().unwrap();
    assert_eq!(server.presented(), ["r0", "r1", "r2"]);
    assert_eq!(access(&manager).as_deref(), Some("a3"));
}

#[tokio::test(flavor = "current_thread")]
async fn after_invalid_grant_an_older_stored_pair_is_not_adopted() {
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("r0");
    let first = token_at(&clock, "a0", "r0");
    let store = Flaky {
        inner: MemoryStore::with_token(first.clone()),
        ..Flaky::default()
    };
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .store(store.clone())
        .token(first)
        .build();
    clock.advance(Duration::from_secs(5400 - 60));
    store.fail_next_save.store(true, Ordering::SeqCst);
    let refreshed = manager.bearer().await.unwrap(); // r0 → r1, not saved
    *server.live.lock().unwrap() = None; // r1 revoked
    clock.advance(Duration::from_secs(600));
    let replay = manager.rejected(refreshed.generation()).await;
    assert!(
        matches!(replay, Err(Error::ReauthorizationRequired { .. })),
        "{replay:?}"
    );
    manager.bearer().await.unwrap_err();
    assert_eq!(server.presented(), ["r0", "r1"]);
}

#[test]
fn an_absurd_expires_in_is_clamped_not_a_panic() {
    for expires_in in [u64::MAX, 1 << 63, 4_000_000_000_000] {
        let body = format!(
            r#"{{"access_token":"a","token_type":"bearer","expires_in":{expires_in},"refresh_token":"r"}}"#
        );
        let sent_at = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
        let token = oauth()
            .parse_token_response(&json(200, body), sent_at)
            .unwrap();
        assert_eq!(
            token.expires_at(),
            Some(sent_at + procore_auth_core::MAX_TOKEN_LIFETIME)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_absurd_expires_in_inside_a_refresh_keeps_the_rotated_pair() {
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("r0");
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .token(token_at(&clock, "a0", "r0"))
        .build();
    clock.advance(Duration::from_secs(7200));
    *server.expires_in_next.lock().unwrap() = Some(u64::MAX);
    manager.bearer().await.unwrap();
    clock.advance(Duration::from_secs(120));
    manager.bearer().await.unwrap();
    assert_eq!(server.presented(), ["r0"]);
}

#[test]
fn a_spawner_that_polls_inline_does_not_deadlock() {
    #[derive(Debug)]
    struct Inline;
    impl Spawn for Inline {
        fn spawn(&self, mut task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
            match task.as_mut().now_or_never() {
                Some(()) => Ok(()),
                None => Err(task),
            }
        }
    }
    #[derive(Debug)]
    struct Minting;
    impl TokenSource for Minting {
        fn fetch<'a>(
            &'a self,
            _: Option<&'a Token>,
            clock: &'a dyn Clock,
        ) -> BoxFuture<'a, Result<Token, Error>> {
            Box::pin(async move {
                let now = clock.now();
                let expires = now + Duration::from_secs(5400);
                Token::new(AccessToken::new("minted"), None, now, Some(expires))
            })
        }
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let manager = TokenManager::builder(Minting)
            .clock(ManualClock::at_unix(T0))
            .spawner(Inline)
            .build();
        let bearer = manager.bearer().now_or_never();
        let _ = done.send(bearer.map(|bearer| bearer.is_ok()));
    });
    let outcome = finished.recv_timeout(Duration::from_secs(10));
    assert_eq!(outcome, Ok(Some(true)), "deadlocked or failed");
}

#[tokio::test(flavor = "current_thread")]
async fn a_token_set_during_a_refresh_wins_in_memory_and_in_the_store() {
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("r0");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *server.gate.lock().unwrap() = Some(Arc::clone(&gate));
    let first = token_at(&clock, "a0", "r0");
    let store = MemoryStore::with_token(first.clone());
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .store(store.clone())
        .token(first)
        .build();
    clock.advance(Duration::from_secs(7200));
    let waiter = tokio::spawn({
        let manager = manager.clone();
        async move { manager.bearer().await }
    });
    for _ in 0..10_000 {
        if !server.presented().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(server.presented(), ["r0"]);
    manager
        .set_token(token_at(&clock, "user-a", "user-r"))
        .await
        .unwrap();
    gate.add_permits(1);
    let bearer = waiter.await.unwrap().unwrap();
    assert_eq!(bearer.header_value(), "Bearer user-a");
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "user-a");
    assert_eq!(access(&manager).as_deref(), Some("user-a"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_successful_set_token_clears_the_last_store_error() {
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("r0");
    let store = Flaky::default();
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .store(store.clone())
        .build();
    store.fail_next_save.store(true, Ordering::SeqCst);
    manager
        .set_token(token_at(&clock, "a0", "r0"))
        .await
        .unwrap_err();
    assert!(manager.last_store_error().is_some());
    manager
        .set_token(token_at(&clock, "a0", "r0"))
        .await
        .unwrap();
    assert!(manager.last_store_error().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_that_panics_during_a_store_recheck_does_not_poison_the_manager() {
    #[derive(Debug, Clone, Default)]
    struct Panicky {
        inner: MemoryStore,
        panic_load: Arc<AtomicBool>,
    }
    impl TokenStore for Panicky {
        fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
            assert!(
                !self.panic_load.load(Ordering::SeqCst),
                "store load panicked"
            );
            self.inner.load()
        }
        fn save<'a>(
            &'a self,
            token: &'a Token,
            expected: Option<&'a Token>,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            self.inner.save(token, expected)
        }
    }
    let clock = ManualClock::at_unix(T0);
    let server = Server::with_live("someone-else");
    let first = token_at(&clock, "a0", "r0");
    let store = Panicky::default();
    store.inner.save(&first, None).await.unwrap();
    let manager = TokenManager::builder(grant(&server))
        .clock(clock.clone())
        .store(store.clone())
        .token(first)
        .build();
    clock.advance(Duration::from_secs(3 * 3600));
    let err = manager.bearer().await.unwrap_err();
    assert!(
        matches!(err, Error::ReauthorizationRequired { .. }),
        "{err:?}"
    );
    store.panic_load.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3));
    let panicked = AssertUnwindSafe(manager.bearer()).catch_unwind().await;
    assert!(
        matches!(panicked, Ok(Err(Error::SourcePanicked))),
        "{panicked:?}"
    );
    // The store recovers and a peer saved a good pair: adopted.
    store.panic_load.store(false, Ordering::SeqCst);
    store
        .inner
        .save(&token_at(&clock, "peer-a", "peer-r"), None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3));
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer peer-a");
}
