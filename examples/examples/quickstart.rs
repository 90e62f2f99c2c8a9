//! The README's demo: 1 000 concurrent requests across a forced token expiry cause
//! exactly one token refresh.
//!
//! Run with `cargo run --example quickstart`. No Procore account is needed: a small
//! in-process stand-in plays Procore's token endpoint (single-use, rotating refresh
//! tokens) and API (401 for revoked tokens).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use procore_auth_core::{
    AccessToken, BoxFuture, ClientSecret, Clock, Environment, OAuthClient, RefreshToken,
    RefreshTokenGrant, SystemClock, Token, TokenManager, Transport, TransportError,
};

const REQUESTS: usize = 1000;

/// Procore's token endpoint and API, in memory: each refresh token works once; the
/// API accepts only live access tokens.
#[derive(Debug, Default)]
struct LocalProcore {
    live_access: Mutex<HashSet<String>>,
    live_refresh: Mutex<HashSet<String>>,
    issued: AtomicU64,
    token_calls: AtomicU64,
}

impl LocalProcore {
    fn issue(&self) -> (String, String) {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let pair = (format!("demo-access-{n}"), format!("demo-refresh-{n}"));
        self.live_access.lock().unwrap().insert(pair.0.clone());
        self.live_refresh.lock().unwrap().insert(pair.1.clone());
        pair
    }

    /// Like Procore revoking every access token at once.
    fn expire_all_access_tokens(&self) {
        self.live_access.lock().unwrap().clear();
    }

    /// `GET /rest/v1.0/me`: 200 for a live token, else 401.
    fn api_status(&self, authorization: &http::HeaderValue) -> u16 {
        let token = authorization
            .to_str()
            .unwrap_or("")
            .trim_start_matches("Bearer ");
        if self.live_access.lock().unwrap().contains(token) {
            200
        } else {
            401
        }
    }
}

/// The token endpoint, reached through the core's `Transport` trait (an adapter
/// would send over HTTP here).
#[derive(Debug, Clone)]
struct InProcess(Arc<LocalProcore>);

impl Transport for InProcess {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(async move {
            self.0.token_calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await; // a realistic round trip
            let presented = form_urlencoded_value(request.body(), "refresh_token");
            let burnt = presented.is_some_and(|t| self.0.live_refresh.lock().unwrap().remove(&t));
            let (status, body) = if burnt {
                let (access, refresh) = self.0.issue();
                let body = format!(
                    r#"{{"access_token":"{access}","token_type":"bearer","expires_in":5400,"refresh_token":"{refresh}"}}"#
                );
                (200, body)
            } else {
                (400, r#"{"error":"invalid_grant"}"#.to_owned())
            };
            Ok(http::Response::builder()
                .status(status)
                .body(Bytes::from(body))
                .expect("static response parts are valid"))
        })
    }
}

fn form_urlencoded_value(body: &[u8], key: &str) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let procore = Arc::new(LocalProcore::default());
    let client = OAuthClient::new(
        Environment::custom("http://127.0.0.1:1")?,
        "demo-client",
        ClientSecret::new("demo-secret"),
    );
    let manager = TokenManager::builder(RefreshTokenGrant::new(
        client,
        InProcess(Arc::clone(&procore)),
    ))
    .build();

    // The user authorized once (in real life: the authorization-code flow).
    let (access, refresh) = procore.issue();
    let issued = SystemClock.now();
    let token = Token::new(
        AccessToken::new(access),
        Some(RefreshToken::new(refresh)),
        issued,
        Some(issued + Duration::from_secs(5400)),
    )?;
    manager.set_token(token).await?;

    // Procore expires every token; then 1 000 requests arrive at once.
    procore.expire_all_access_tokens();
    let unauthorized = Arc::new(AtomicU64::new(0));
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (manager, procore, unauthorized) = (
                manager.clone(),
                Arc::clone(&procore),
                Arc::clone(&unauthorized),
            );
            tokio::spawn(async move {
                #[allow(clippy::disallowed_methods)] // measuring the demo, not token expiry
                let started = Instant::now();
                let bearer = manager.bearer().await?;
                let mut status = procore.api_status(bearer.header_value());
                if status == 401 {
                    unauthorized.fetch_add(1, Ordering::Relaxed);
                    if let Some(replay) = manager.rejected(bearer.generation()).await? {
                        status = procore.api_status(replay.header_value());
                    }
                }
                Ok::<_, procore_auth_core::Error>((status, started.elapsed()))
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut ok = 0;
    for request in requests {
        let (status, latency) = request.await??;
        ok += usize::from(status == 200);
        latencies.push(latency);
    }
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let token_calls = procore.token_calls.load(Ordering::Relaxed);

    println!("procore-auth quickstart (core only, in-process Procore stand-in)");
    println!("  requests ok:      {ok}/{REQUESTS}");
    println!(
        "  401s seen:        {}",
        unauthorized.load(Ordering::Relaxed)
    );
    println!("  token calls made: {token_calls}");
    println!(
        "  latency p50/p99:  {:?} / {:?}",
        percentile(50),
        percentile(99)
    );
    if ok != REQUESTS || token_calls != 1 {
        return Err(format!("expected {REQUESTS} ok and 1 token call").into());
    }
    Ok(())
}
