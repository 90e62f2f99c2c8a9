//! Managers holding a real user token from the emulator, and the numbers scenarios
//! share.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Clock, Environment, ManualClock, OAuthClient,
    RefreshTokenGrant, SystemClock, Token, TokenManager, TokenManagerBuilder, TokenRegistry,
    TokenRegistryBuilder, Transport,
};
use procore_auth_reqwest::ReqwestTransport;
use procore_auth_testkit::{Emulator, UserId};
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
    let token = exchange_code(emulator, emulator.default_user(), &oauth, &transport).await;
    let builder = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(token)
        .backoff(BACKOFF_BASE, BACKOFF_MAX);
    configure(builder).build()
}

/// Each user's token from a real authorization-code exchange, as an app gets it in
/// its OAuth callback (the emulator counts one authorization-code grant per user), in
/// the order of `users`. One client makes them all: building one takes a while.
///
/// # Panics
///
/// If a code exchange fails, or a user is not a user of `emulator`.
pub async fn user_tokens(emulator: &Emulator, users: &[UserId]) -> Vec<Token> {
    let transport = token_transport(TOKEN_CALL_TIMEOUT);
    let oauth = oauth(emulator);
    let mut tokens = Vec::with_capacity(users.len());
    for &user in users {
        tokens.push(exchange_code(emulator, user, &oauth, &transport).await);
    }
    tokens
}

async fn exchange_code(
    emulator: &Emulator,
    user: UserId,
    oauth: &OAuthClient,
    transport: &dyn Transport,
) -> Token {
    let code = AuthorizationCode::new(emulator.authorize_code_for(user, "http://localhost"));
    oauth
        .exchange_code(transport, &code, "http://localhost")
        .await
        .expect("an authorization-code exchange")
}

/// A registry of tenants keyed by `K`, all refreshing through the emulator with the
/// adapter's own transport ([`adapter_token_transport`]`(adapter, `[`TOKEN_CALL_TIMEOUT`]`)`),
/// each tenant's manager with back-off between [`BACKOFF_BASE`] and [`BACKOFF_MAX`],
/// then `configure`d. Set the store, the bound and so on on the builder returned;
/// put tokens in with `insert` (see [`user_tokens`]).
pub fn tenant_registry<K>(
    adapter: Adapter,
    emulator: &Emulator,
    configure: impl Fn(&K, TokenManagerBuilder) -> TokenManagerBuilder + Send + Sync + 'static,
) -> TokenRegistryBuilder<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    let grant = RefreshTokenGrant::new(
        oauth(emulator),
        adapter_token_transport(adapter, TOKEN_CALL_TIMEOUT),
    );
    TokenRegistry::builder(grant)
        .configure(move |key, builder| configure(key, builder.backoff(BACKOFF_BASE, BACKOFF_MAX)))
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
