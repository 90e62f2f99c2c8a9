//! The fault matrix, through both adapters: what callers see when the token endpoint
//! or the API misbehaves, against the emulator over loopback HTTP. Every row runs
//! once through the Tower layer (on a hyper-util client) and once through the
//! reqwest middleware. Assertions are on outcomes and counts; sleeps only let
//! back-off or `Retry-After` pass.
//!
//! (It lives in the examples package because that is the one that depends on both
//! adapters and the emulator.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use procore_auth_core::{
    AuthorizationCode, BoxFuture, ClientSecret, Environment, Error as AuthError, FileStore,
    MemoryStore, OAuthClient, RefreshTokenGrant, StoreError, Token, TokenManager,
    TokenManagerBuilder, TokenStore, TransportErrorKind,
};
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{Emulator, TokenFault};
use procore_auth_tower::{ProcoreAuth, ProcoreAuthLayer};
use tower::{Layer, ServiceExt};

/// A Procore client through one of the adapters.
#[derive(Clone, Debug)]
enum Client {
    Tower(ProcoreAuth<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

impl Client {
    /// Both adapters over the same `manager`.
    fn both(manager: &TokenManager) -> [Client; 2] {
        let hyper =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        [
            Client::Tower(ProcoreAuthLayer::new(manager.clone()).layer(hyper)),
            Client::Reqwest(
                reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(ProcoreAuthMiddleware::new(manager.clone()))
                    .build(),
            ),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Client::Tower(_) => "tower",
            Client::Reqwest(_) => "reqwest",
        }
    }

    /// `GET url`: the status, or the core error behind a failure.
    async fn get(&self, url: &str) -> Result<StatusCode, AuthError> {
        match self {
            Client::Tower(service) => {
                let request = http::Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match service.clone().oneshot(request).await {
                    Ok(response) => Ok(response.status()),
                    Err(procore_auth_tower::Error::Auth(error)) => Err(error),
                    Err(error) => panic!("not an authorization error: {error:?}"),
                }
            }
            Client::Reqwest(client) => match client.get(url).send().await {
                Ok(response) => Ok(response.status()),
                Err(error) => Err(auth_error(&error)
                    .unwrap_or_else(|| panic!("not an authorization error: {error:?}"))
                    .clone()),
            },
        }
    }
}

fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).unwrap(),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

/// A transport whose requests give up after `timeout`.
fn transport(timeout: Duration) -> ReqwestTransport {
    ReqwestTransport::with_client(
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    )
}

/// Token calls give up after this long, except where a test wants a hang to end soon
/// (generous: a debug-build emulator takes a while to produce a 10 MiB body).
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A user token from a real code exchange, and a manager configured by `configure`.
async fn manager(
    emulator: &Emulator,
    configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> TokenManager {
    manager_with_timeout(emulator, TOKEN_CALL_TIMEOUT, configure).await
}

async fn manager_with_timeout(
    emulator: &Emulator,
    timeout: Duration,
    configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> TokenManager {
    let transport = transport(timeout);
    let oauth = oauth(emulator);
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let builder = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .backoff(Duration::from_millis(50), Duration::from_millis(200));
    configure(builder).build()
}

fn me(emulator: &Emulator) -> String {
    format!("{}/rest/v1.0/me", emulator.base_url())
}

/// Retries until a request succeeds (back-off passing), at most ~10 s.
async fn until_ok(client: &Client, url: &str) {
    for _ in 0..200 {
        if client.get(url).await.ok() == Some(StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{}: never recovered", client.name());
}

#[tokio::test]
async fn server_errors_on_refresh_are_transient_shared_and_bounded_then_recover() {
    for adapter in 0..2 {
        let emulator = Emulator::start().await;
        // A back-off window (at least 0.5 s) that outlasts the burst even on a busy
        // machine, so the burst's token calls are counted, not raced.
        let tokens = manager(&emulator, |b| {
            b.backoff(Duration::from_secs(1), Duration::from_secs(1))
        })
        .await;
        let client = Client::both(&tokens)[adapter].clone();
        for _ in 0..3 {
            emulator.push_token_fault(TokenFault::Status(503));
        }
        emulator.expire_all_tokens();
        let url = me(&emulator);
        // A burst of 200 requests while the endpoint fails: every failure is a typed,
        // transient error, and the burst costs one token call.
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { client.get(&url).await })
            })
            .collect();
        for outcome in burst {
            match outcome.await.unwrap() {
                Err(error) => assert!(error.is_transient(), "{error:?}"),
                Ok(status) => panic!("unexpected {status}"),
            }
        }
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        until_ok(&client, &url).await;
        let stats = emulator.stats();
        assert_eq!(
            stats.refresh_token_grants, 4,
            "3 failures, then success: {stats:?}"
        );
    }
}

#[tokio::test]
async fn rate_limited_refresh_waits_for_retry_after() {
    for adapter in 0..2 {
        let emulator = Emulator::start().await;
        let tokens = manager(&emulator, |b| b).await;
        let client = Client::both(&tokens)[adapter].clone();
        emulator.push_token_fault(TokenFault::RateLimited {
            retry_after_secs: 1,
        });
        emulator.expire_all_tokens();
        let url = me(&emulator);
        let first = client.get(&url).await.unwrap_err();
        assert_eq!(first.retry_after(), Some(Duration::from_secs(1)));
        // Well inside the second: every request is refused without a token call.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(matches!(
                client.get(&url).await,
                Err(AuthError::BackingOff { .. })
            ));
        }
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        until_ok(&client, &url).await;
        assert_eq!(emulator.stats().refresh_token_grants, 2);
    }
}

#[tokio::test]
async fn a_hanging_token_endpoint_times_out_and_releases_every_waiter() {
    for adapter in 0..2 {
        let emulator = Emulator::start().await;
        let manager = manager_with_timeout(&emulator, Duration::from_millis(300), |b| b).await;
        let client = Client::both(&manager)[adapter].clone();
        emulator.push_token_fault(TokenFault::Hang);
        emulator.expire_all_tokens();
        let url = me(&emulator);
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { client.get(&url).await })
            })
            .collect();
        let mut timed_out = 0;
        for waiter in waiters {
            match waiter.await.unwrap() {
                Err(AuthError::Transport(error)) => {
                    assert_eq!(error.kind(), TransportErrorKind::Timeout);
                    timed_out += 1;
                }
                Err(AuthError::BackingOff { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(timed_out >= 1);
        assert_eq!(emulator.stats().refresh_token_grants, 1);
        // The hang was a proxy in front of Procore: the refresh token is still good.
        until_ok(&client, &url).await;
        assert_eq!(emulator.stats().refresh_token_grants, 2);
    }
}

#[tokio::test]
async fn malformed_token_responses_are_typed_errors() {
    for adapter in 0..2 {
        type Check = fn(&AuthError) -> bool;
        let cases: [(TokenFault, Check); 3] = [
            (TokenFault::MalformedJson, |e| {
                matches!(e, AuthError::InvalidResponse { .. })
            }),
            (TokenFault::MissingAccessToken, |e| {
                matches!(e, AuthError::InvalidResponse { .. })
            }),
            (TokenFault::HugeBody { bytes: 10 << 20 }, |e| {
                matches!(e, AuthError::ResponseTooLarge { .. })
            }),
        ];
        for (fault, check) in cases {
            let emulator = Emulator::start().await;
            let tokens = manager(&emulator, |b| b).await;
            let client = Client::both(&tokens)[adapter].clone();
            emulator.push_token_fault(fault.clone());
            emulator.expire_all_tokens();
            let error = client.get(&me(&emulator)).await.unwrap_err();
            assert!(check(&error), "{fault:?}: {error:?}");
        }
    }
}

#[tokio::test]
async fn a_server_clock_ten_minutes_off_causes_no_refresh_loop() {
    for adapter in 0..2 {
        for offset in [-600, 600] {
            let emulator = Emulator::builder().clock_offset_secs(offset).start().await;
            let tokens = manager(&emulator, |b| b).await;
            let client = Client::both(&tokens)[adapter].clone();
            let url = me(&emulator);
            for _ in 0..20 {
                assert_eq!(
                    client.get(&url).await.ok(),
                    Some(StatusCode::OK),
                    "{offset}"
                );
            }
            assert_eq!(emulator.stats().refresh_token_grants, 0, "{offset}");
            emulator.expire_all_tokens();
            for _ in 0..20 {
                assert_eq!(
                    client.get(&url).await.ok(),
                    Some(StatusCode::OK),
                    "{offset}"
                );
            }
            assert_eq!(emulator.stats().refresh_token_grants, 1, "{offset}");
        }
    }
}

/// A store whose first `failures` saves fail.
#[derive(Debug, Clone, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failures: Arc<AtomicU32>,
}

impl TokenStore for FlakyStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.inner.load()
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let failing = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let error = StoreError::from(std::io::Error::other("disk full"));
            return Box::pin(async move { Err(error) });
        }
        self.inner.save(token, expected)
    }
}

#[tokio::test]
async fn a_failing_store_keeps_the_token_in_use_and_saves_next_time() {
    for adapter in 0..2 {
        let emulator = Emulator::start().await;
        let store = FlakyStore::default();
        store.failures.store(1, Ordering::Relaxed);
        let manager = manager(&emulator, |b| {
            b.store(store.clone())
                .min_rejection_interval(Duration::ZERO)
        })
        .await;
        let client = Client::both(&manager)[adapter].clone();
        let url = me(&emulator);

        emulator.expire_all_tokens();
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        assert!(matches!(
            manager.last_store_error(),
            Some(StoreError::Io(_))
        ));
        assert_eq!(manager.metrics().store_failures, 1);
        assert!(store.inner.load().await.unwrap().is_none());

        emulator.expire_all_tokens();
        assert_eq!(client.get(&url).await.ok(), Some(StatusCode::OK));
        let saved = store.inner.load().await.unwrap().unwrap();
        assert!(saved.same_credentials(&manager.token().unwrap()));
        assert!(manager.last_store_error().is_none());
    }
}

#[tokio::test]
async fn rotation_survives_a_restart_from_the_file_store() {
    for adapter in 0..2 {
        let emulator = Emulator::start().await;
        let dir = std::env::temp_dir().join(format!("procore-auth-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.json");
        let _ = std::fs::remove_file(&path);
        let first = manager(&emulator, |b| b.store(FileStore::new(&path))).await;
        first.set_token(first.token().unwrap()).await.unwrap();
        let url = me(&emulator);

        // A refresh rotates the pair; the new pair is on disk by the time it is used.
        emulator.expire_all_tokens();
        let client_a = Client::both(&first)[adapter].clone();
        assert_eq!(client_a.get(&url).await.ok(), Some(StatusCode::OK));
        let on_disk: Token = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(on_disk.same_credentials(&first.token().unwrap()));
        drop((client_a, first));

        // A new process starts from the file alone and goes on without reauthorizing,
        // including its own refresh with the rotated refresh token.
        let restarted = TokenManager::builder(RefreshTokenGrant::new(
            oauth(&emulator),
            transport(TOKEN_CALL_TIMEOUT),
        ))
        .store(FileStore::new(&path))
        .build();
        let client_b = Client::both(&restarted)[adapter].clone();
        assert_eq!(client_b.get(&url).await.ok(), Some(StatusCode::OK));
        emulator.expire_all_tokens();
        assert_eq!(client_b.get(&url).await.ok(), Some(StatusCode::OK));
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 2, "{stats:?}");
        assert_eq!(stats.consumed_refresh_tokens.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
