//! Managers holding a real user token from the emulator, and the numbers scenarios
//! share.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Clock, Environment, ManualClock, OAuthClient,
    RefreshTokenGrant, SystemClock, TokenManager, TokenManagerBuilder, Transport,
};
use procore_auth_reqwest::ReqwestTransport;
use procore_auth_testkit::Emulator;
use procore_auth_tower::TowerTransport;

use crate::Adapter;

/// Token calls give up after this long, unless a scenario wants a hang to end sooner
/// (generous: a debug-build emulator takes a while to produce a 10 MiB body).
pub const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The back-off after a failed refresh starts here (short, so recoveries are quick)…
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);

/// …and never exceeds this, unless the server asks for longer with `Retry-After`.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// The OAuth client for the emulator's registered application.
///
/// # Panics
///
/// If the emulator's base URL is not a valid custom environment.
pub fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).expect("the emulator's base URL"),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

/// The transport for token calls, whatever the adapter under test: a plain reqwest
/// client that follows no redirects and gives up after `timeout`.
///
/// # Panics
///
/// If reqwest cannot build a client.
pub fn token_transport(timeout: Duration) -> ReqwestTransport {
    ReqwestTransport::with_client(
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client"),
    )
}

/// The adapter's own transport for token calls, giving up after `timeout`, as its
/// users would set it up: for [`Adapter::Tower`], `TowerTransport` over a plain
/// `hyper_util` client under `tower::timeout::Timeout`; for [`Adapter::Reqwest`],
/// [`token_transport`]. (Scenarios that are not about the transport use
/// [`token_transport`] for both.)
///
/// # Panics
///
/// If reqwest cannot build a client.
pub fn adapter_token_transport(adapter: Adapter, timeout: Duration) -> Arc<dyn Transport> {
    match adapter {
        Adapter::Tower => {
            let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Full<Bytes>>();
            Arc::new(TowerTransport::new(tower::timeout::Timeout::new(
                http, timeout,
            )))
        }
        Adapter::Reqwest => Arc::new(token_transport(timeout)),
    }
}

/// A manager holding a user token from a real authorization-code exchange, refreshing
/// through [`token_transport`]`(`[`TOKEN_CALL_TIMEOUT`]`)` with back-off between
/// [`BACKOFF_BASE`] and [`BACKOFF_MAX`]; `configure` may change any of that.
///
/// # Panics
///
/// If the code exchange fails.
pub async fn authorized_manager(
    emulator: &Emulator,
    configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> TokenManager {
    authorized_manager_with_timeout(emulator, TOKEN_CALL_TIMEOUT, configure).await
}

/// [`authorized_manager`] with token calls that give up after `timeout`.
///
/// # Panics
///
/// If the code exchange fails.
pub async fn authorized_manager_with_timeout(
    emulator: &Emulator,
    timeout: Duration,
    configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> TokenManager {
    let transport = token_transport(timeout);
    let oauth = oauth(emulator);
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .expect("an authorization-code exchange");
    let builder = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .backoff(BACKOFF_BASE, BACKOFF_MAX);
    configure(builder).build()
}

/// How long [`wait_until`] waits at the most…
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// …polling this often.
pub const WAIT_POLL: Duration = Duration::from_millis(5);

/// Waits until `condition` holds, checking every [`WAIT_POLL`].
///
/// # Panics
///
/// If it still does not hold after [`WAIT_LIMIT`]: a regression fails, it does not hang.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..WAIT_LIMIT.as_millis() / WAIT_POLL.as_millis() {
        if condition() {
            return;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    assert!(condition(), "still waiting after {WAIT_LIMIT:?}: {what}");
}

/// A clock stopped at the real time now, for scenarios in which back-off or
/// `Retry-After` must pass: they move it past the wait instead of sleeping, so the
/// wait holds for exactly as long as they say, however slow the machine. Stopped at
/// the real time, the emulator's tokens are as fresh to it as to the server.
pub fn frozen_clock() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

/// The emulator's `/rest/v1.0/me`: 200 for a valid token, 401 otherwise.
pub fn me(emulator: &Emulator) -> String {
    format!("{}/rest/v1.0/me", emulator.base_url())
}
