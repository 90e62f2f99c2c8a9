//! The refresh herd through the real adapters: K concurrent requests after a forced
//! expiry, over loopback HTTP against the emulator, through the Tower layer (on a
//! hyper-util client) and the reqwest middleware; or K waiters reporting the 401 to
//! the manager directly, as the adapters do. The emulator counts the refreshes.
//! The manager keeps its token in memory only, or in a [`TokenStore`] (Redis, for the
//! cross-process lease: see [`crate::redis_store`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, MemoryStore, OAuthClient, RefreshTokenGrant,
    Token, TokenManager, TokenStore,
};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::Emulator;
use procore_auth_tower::{ProcoreAuth, ProcoreAuthLayer};
use tower::{Layer, ServiceExt};

/// Which adapter carries the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// `ProcoreAuthLayer` over a hyper-util client.
    Tower,
    /// `ProcoreAuthMiddleware` over reqwest.
    Reqwest,
}

impl Adapter {
    /// Both adapters.
    pub const ALL: [Adapter; 2] = [Adapter::Tower, Adapter::Reqwest];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Tower => "tower layer + hyper-util",
            Adapter::Reqwest => "reqwest middleware",
        }
    }
}

/// Authorizes the emulator's default user with a code exchange, over loopback HTTP:
/// the grant that refreshes its tokens, and its first token.
pub async fn authorize(emulator: &Emulator) -> (RefreshTokenGrant, Token) {
    let oauth = OAuthClient::new(
        Environment::custom(&emulator.base_url()).expect("emulator URL"),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    );
    let transport = ReqwestTransport::new().expect("client");
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .expect("code exchange");
    (RefreshTokenGrant::new(oauth, transport), token)
}

/// An emulator and one authorized client per adapter, sharing one token.
#[derive(Debug)]
pub struct Setup {
    emulator: Emulator,
    manager: TokenManager,
    tower: ProcoreAuth<Client<HttpConnector, Full<Bytes>>>,
    reqwest: reqwest_middleware::ClientWithMiddleware,
    me: String,
}

impl Setup {
    /// Starts the emulator and authorizes (on `runtime`); the token lives in the
    /// manager only.
    pub fn new(runtime: &tokio::runtime::Runtime) -> Self {
        Self::build(runtime, None::<MemoryStore>)
    }

    /// As [`new`](Self::new), the manager saving its tokens to `store` (the first
    /// one before any request) and taking its turn to refresh from it.
    pub fn with_store(runtime: &tokio::runtime::Runtime, store: impl TokenStore + 'static) -> Self {
        Self::build(runtime, Some(store))
    }

    fn build(runtime: &tokio::runtime::Runtime, store: Option<impl TokenStore + 'static>) -> Self {
        runtime.block_on(async {
            let emulator = Emulator::start().await;
            let (grant, token) = authorize(&emulator).await;
            let manager = match store {
                None => TokenManager::builder(grant).token(token).build(),
                Some(store) => {
                    let manager = TokenManager::builder(grant).store(store).build();
                    manager.set_token(token).await.expect("the store saves");
                    manager
                }
            };
            let hyper = Client::builder(TokioExecutor::new()).build_http();
            Self {
                me: format!("{}/rest/v1.0/me", emulator.base_url()),
                manager: manager.clone(),
                tower: ProcoreAuthLayer::new(manager.clone()).layer(hyper),
                reqwest: reqwest_middleware::ClientBuilder::new(
                    procore_auth_reqwest::client_builder()
                        .build()
                        .expect("a reqwest client builds"),
                )
                .with(ProcoreAuthMiddleware::new(manager))
                .build(),
                emulator,
            }
        })
    }

    /// Expires every token, then sends `requests` at once through `adapter`; returns
    /// the time until all answered 200 and the refreshes the emulator saw.
    pub fn herd(
        &self,
        runtime: &tokio::runtime::Runtime,
        adapter: Adapter,
        requests: usize,
    ) -> (Duration, u64) {
        runtime.block_on(async {
            self.emulator.expire_all_tokens();
            let before = self.emulator.stats().refresh_token_grants;
            let started = Instant::now();
            let handles: Vec<_> = (0..requests)
                .map(|_| {
                    let me = self.me.clone();
                    match adapter {
                        Adapter::Tower => {
                            let service = self.tower.clone();
                            tokio::spawn(async move {
                                let request = http::Request::get(me)
                                    .body(Full::new(Bytes::new()))
                                    .expect("valid request");
                                service.oneshot(request).await.expect("request").status()
                            })
                        }
                        Adapter::Reqwest => {
                            let request = self.reqwest.get(me);
                            tokio::spawn(
                                async move { request.send().await.expect("request").status() },
                            )
                        }
                    }
                })
                .collect();
            for handle in handles {
                assert_eq!(handle.await.expect("no panic"), http::StatusCode::OK);
            }
            let elapsed = started.elapsed();
            (elapsed, self.emulator.stats().refresh_token_grants - before)
        })
    }

    /// Expires every token, then `waiters` tasks report a 401 for the current token
    /// at once (`TokenManager::rejected`, as the adapters do); returns the time until
    /// all of them hold the new token, and the refreshes the emulator saw.
    pub fn rejected_herd(
        &self,
        runtime: &tokio::runtime::Runtime,
        waiters: usize,
    ) -> (Duration, u64) {
        runtime.block_on(async {
            let rejected = self
                .manager
                .bearer()
                .await
                .expect("the current token")
                .generation();
            self.emulator.expire_all_tokens();
            let before = self.emulator.stats().refresh_token_grants;
            let started = Instant::now();
            let handles: Vec<_> = (0..waiters)
                .map(|_| {
                    let manager = self.manager.clone();
                    tokio::spawn(async move {
                        manager
                            .rejected(rejected)
                            .await
                            .expect("the refresh succeeds")
                            .expect("a new token to replay with")
                            .generation()
                    })
                })
                .collect();
            for handle in handles {
                assert_ne!(handle.await.expect("no panic"), rejected);
            }
            let elapsed = started.elapsed();
            (elapsed, self.emulator.stats().refresh_token_grants - before)
        })
    }
}
