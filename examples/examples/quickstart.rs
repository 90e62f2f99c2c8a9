//! The README's demo: one token shared by a Tower client and a reqwest client; 1 000
//! concurrent requests across a forced token expiry cause exactly one refresh.
//!
//! `cargo run --example quickstart` — no Procore account needed: it starts the local
//! Procore emulator from `procore-auth-testkit` and talks to it over loopback HTTP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, OAuthClient, RefreshTokenGrant, TokenManager,
};
use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::Emulator;
use procore_auth_tower::ProcoreAuthLayer;
use tower::{Layer, ServiceExt};

const REQUESTS: usize = 1000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start().await;
    let oauth = OAuthClient::new(
        Environment::custom(&emulator.base_url())?,
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    );

    // The user authorizes once (here the emulator approves at once); the token
    // endpoint is reached with a plain reqwest client.
    let transport = ReqwestTransport::new()?;
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await?;
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .build();

    // One manager, two clients: a hyper client behind the Tower layer, and a reqwest
    // client with the middleware.
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let tower_client = ProcoreAuthLayer::new(manager.clone()).layer(hyper);
    let reqwest_client =
        reqwest_middleware::ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
            .with(ProcoreAuthMiddleware::new(manager.clone()))
            .build();

    // Procore expires every token; then 1 000 requests arrive at once.
    emulator.expire_all_tokens();
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (tower_client, reqwest_client, me) =
                (tower_client.clone(), reqwest_client.clone(), me.clone());
            tokio::spawn(async move {
                #[allow(clippy::disallowed_methods)] // timing the demo, not token expiry
                let started = Instant::now();
                let status = if i % 2 == 0 {
                    let request = http::Request::get(me).body(Full::new(Bytes::new()))?;
                    tower_client.oneshot(request).await?.status()
                } else {
                    reqwest_client.get(me).send().await?.status()
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, started.elapsed()))
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(REQUESTS);
    let mut ok = 0;
    for request in requests {
        let (status, latency) = request.await?.map_err(|e| e.to_string())?;
        ok += usize::from(status == http::StatusCode::OK);
        latencies.push(latency);
    }
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let stats = emulator.stats();

    println!(
        "procore-auth quickstart: {REQUESTS} concurrent requests across a forced token expiry"
    );
    println!(
        "  (half through the Tower layer, half through the reqwest middleware, one shared token)"
    );
    println!("  requests ok:       {ok}/{REQUESTS}");
    println!("  401s seen:         {}", stats.unauthorized_served);
    println!(
        "  token calls made:  {} (refresh grants)",
        stats.refresh_token_grants
    );
    println!(
        "  latency p50 / p99: {:.1?} / {:.1?}",
        percentile(50),
        percentile(99)
    );
    if ok != REQUESTS || stats.refresh_token_grants != 1 {
        return Err(format!("expected {REQUESTS} ok and exactly 1 refresh").into());
    }
    Ok(())
}
