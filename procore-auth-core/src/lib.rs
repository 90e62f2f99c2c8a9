//! Transport-agnostic Procore OAuth 2.0 token state.
//!
//! This crate holds everything about Procore tokens except sending bytes:
//!
//! - [`Token`]: access token, rotating refresh token, wall-clock expiry, and a
//!   ready-made sensitive `Bearer` header value;
//! - [`TokenManager`]: the lock-free token cell (`arc-swap`), single-flight refresh
//!   ahead of expiry and after a 401, shared failures with exponential back-off, and
//!   `invalid_grant` as a terminal, typed [`Error::ReauthorizationRequired`];
//! - [`TokenRegistry`]: one manager per tenant (an authorized user, a company
//!   installation), loaded lazily from a [`KeyedTokenStore`], bounded, each tenant
//!   with its own single-flight refresh;
//! - [`TokenStore`]: compare-and-swap persistence ([`MemoryStore`], [`FileStore`]; per
//!   tenant [`KeyedMemoryStore`], [`KeyedFileStore`]) so a rotated refresh token is
//!   saved before it is used and never lost;
//! - [`OAuthClient`]: a sans-IO client that builds `http::Request`s for Procore's
//!   endpoints and parses their `http::Response`s;
//! - [`RequestPolicy`] and the per-request protocol ([`Tokens::authorize`],
//!   [`Authorized::attach`], [`Attached::judge`]): which requests get a token, whose,
//!   and when to replay, driven by the `procore-auth-tower` and `procore-auth-reqwest`
//!   adapters, which hold no decisions of their own;
//! - [`Spawn`]: where a refresh runs to completion once nobody waits for it.
//!
//! # Threads
//!
//! The crate starts one thread of its own, and only once used: with the
//! [`SystemClock`] (the default), a manager's first token read starts
//! `procore-auth-clock`, which stores the time every [`COARSE_TICK`] (100 ms) so that
//! token reads never call the system clock. Building a manager starts nothing; once
//! started, the thread (one per process, however many managers) runs until the
//! process exits. Managers on a [`ManualClock`] or a [`Clock`] of your own never start
//! it. Refreshes run on the [`Spawn`] you give the builder (by default
//! [`AmbientTokio`]: the calling thread's Tokio runtime).
//!
//! An adapter implements [`Transport`] for its HTTP client and asks the manager for a
//! header before every request:
//!
//! ```
//! use bytes::Bytes;
//! use procore_auth_core::{
//!     BoxFuture, ClientSecret, Environment, OAuthClient, RefreshTokenGrant, TokenManager,
//!     Transport, TransportError,
//! };
//!
//! /// Your HTTP client, sending buffered requests (see procore-auth-reqwest).
//! #[derive(Debug)]
//! struct MyHttpClient;
//! impl Transport for MyHttpClient {
//!     fn send(&self, request: http::Request<Bytes>)
//!         -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>>
//!     {
//!         // Send `request` with your client and buffer the response (at most
//!         // MAX_RESPONSE_BYTES); classify failures with TransportError.
//!         Box::pin(async move { Err(TransportError::connect("not wired up in this example")) })
//!     }
//! }
//!
//! let client = OAuthClient::new(
//!     Environment::production(),
//!     "client-id",
//!     ClientSecret::new("client-secret"),
//! );
//! let manager = TokenManager::builder(RefreshTokenGrant::new(client, MyHttpClient)).build();
//!
//! # async fn send_with(manager: TokenManager) -> Result<(), Box<dyn std::error::Error>> {
//! use procore_auth_core::Authorize;
//!
//! let mut request = http::Request::get("https://api.procore.com/rest/v1.0/me").body(())?;
//! let authorized = match manager.authorize(request.uri(), request.headers()) {
//!     Authorize::Skip => None,
//!     Authorize::Ready(authorized) => Some(authorized),
//!     Authorize::Pending(waiting) => Some(waiting.await?),
//! };
//! let attached = authorized.map(|authorized| authorized.attach(request.headers_mut()));
//! // ... send; then `attached.judge(status)` says whether to replay (once) and gives
//! // the token to replay with.
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cell;
mod clock;
mod environment;
mod error;
mod manager;
mod oauth;
mod policy;
mod random;
mod rate_limit;
mod registry;
mod request;
mod retry;
mod secret;
mod source;
mod spawn;
mod store;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod token;
mod transport;

pub use cell::{Bearer, Generation};
pub use clock::{Clock, CoarseTime, ManualClock, SystemClock, COARSE_TICK};
pub use environment::{Environment, OUT_OF_BAND_REDIRECT_URI};
pub use error::{CallbackError, Error, OAuthError, OAuthErrorCode, ReauthorizationReason};
pub use manager::{
    BearerFuture, Jitter, Metrics, RejectedFuture, TokenManager, TokenManagerBuilder,
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_STORE_RECHECK,
};
pub use oauth::{
    AuthorizationRequest, OAuthClient, Revocable, TokenApplication, TokenInfo, DEFAULT_USER_AGENT,
    ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_ENVIRONMENT,
};
pub use policy::{RequestPolicy, PROCORE_COMPANY_ID};
pub use rate_limit::{
    RateLimit, RateLimitPolicy, X_RATE_LIMIT_LIMIT, X_RATE_LIMIT_REMAINING, X_RATE_LIMIT_RESET,
};
pub use registry::{
    RegistryMetrics, Tenant, TokenRegistry, TokenRegistryBuilder, DEFAULT_MAX_RESIDENT,
};
pub use request::{Attached, Authorize, AuthorizeFuture, Authorized, ReplayFuture, Tokens};
pub use retry::{RetryPolicy, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_ELAPSED};
pub use secret::{AccessToken, AuthorizationCode, ClientSecret, RefreshToken};
pub use source::{ClientCredentialsGrant, RefreshTokenGrant, TokenSource};
pub use spawn::{AmbientTokio, Spawn, WaitersOnly};
pub use store::{
    FileStore, KeyedFileStore, KeyedMemoryStore, KeyedTokenStore, MemoryStore, RefreshLease,
    RefreshOutcome, RefreshTurn, StoreError, TokenStore, MAX_KEY_FILE_NAME,
};
pub use token::{Token, DEFAULT_REFRESH_SKEW, MAX_CLOCK_DISAGREEMENT, MAX_TOKEN_LIFETIME};
pub use transport::{
    classify_io_chain, BoxFuture, Transport, TransportError, TransportErrorKind, MAX_RESPONSE_BYTES,
};
