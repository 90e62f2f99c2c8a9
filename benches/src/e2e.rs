//! The refresh herd through the real adapters: K concurrent requests after a forced
//! expiry, over loopback HTTP against the emulator, through the Tower layer (on a
//! hyper-util client) and the reqwest middleware. The emulator counts the refreshes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, OAuthClient, RefreshTokenGrant, TokenManager,
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

/// An emulator and one authorized client per adapter, sharing one token.
#[derive(Debug)]
pub struct Setup {
    emulator: Emulator,
    tower: ProcoreAuth<Client<HttpConnector, Full<Bytes>>>,
    reqwest: reqwest_middleware::ClientWithMiddleware,
    me: String,
}

impl Setup {
    /// Starts the emulator and authorizes (on `runtime`).
    pub fn new(runtime: &tokio::runtime::Runtime) -> Self {
        runtime.block_on(async {
            let emulator = Emulator::start().await;
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
            // Every herd forces a new expiry, so allow a refresh per 401 burst.
            let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
                .token(token)
                .build();
            let hyper = Client::builder(TokioExecutor::new()).build_http();
            Self {
                me: format!("{}/rest/v1.0/me", emulator.base_url()),
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
}
