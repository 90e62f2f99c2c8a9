//! A [Tower] layer that puts a valid Procore bearer token on every request.
//!
//! Wrap any `Service<http::Request<B>>` (a `hyper_util` client, a tonic or axum-style
//! stack) with [`ProcoreAuthLayer`] and stop handling Procore tokens: each request to
//! Procore gets `Authorization: Bearer …` (marked sensitive), tokens are refreshed
//! ahead of expiry, and after a 401 the token is refreshed and the request replayed
//! once. All token decisions come from [`procore_auth_core::TokenManager`]; which
//! requests get the token is its [`RequestPolicy`](procore_auth_core::RequestPolicy).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use procore_auth_core::{ClientSecret, Environment, OAuthClient, RefreshTokenGrant, TokenManager};
//! use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn run(token: procore_auth_core::Token) -> Result<(), Box<dyn std::error::Error>> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let oauth = OAuthClient::new(Environment::production(), "client-id", ClientSecret::new("secret"));
//! // Token calls go through the same client, *without* the layer.
//! let grant = RefreshTokenGrant::new(oauth, TowerTransport::new(http.clone()));
//! let manager = TokenManager::builder(grant).token(token).build();
//!
//! let procore = ProcoreAuthLayer::new(manager).layer(http);
//! let request = http::Request::get("https://api.procore.com/rest/v1.0/me")
//!     .body(Full::new(Bytes::new()))?;
//! let response = procore.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! # Many Procore users through one stack
//!
//! Give the layer a [`TokenRegistry`](procore_auth_core::TokenRegistry) instead of a
//! manager, and put each request's tenant key in its extensions: every request gets
//! its own tenant's token, each tenant refreshes on its own, and a request for the
//! API that names no tenant fails with
//! [`Error::TenantNotSelected`](procore_auth_core::Error::TenantNotSelected) instead
//! of getting anyone's token. (`TokenRegistry::keyed_by` derives the key from the
//! request's headers instead.)
//!
//! ```no_run
//! # use bytes::Bytes;
//! # use http_body_util::Full;
//! # use hyper_util::client::legacy::Client;
//! # use hyper_util::rt::TokioExecutor;
//! # use procore_auth_core::{KeyedFileStore, RefreshTokenGrant, TokenRegistry};
//! # use procore_auth_tower::{ProcoreAuthLayer, TowerTransport};
//! # use tower::{Layer, ServiceExt};
//! # async fn run(oauth: procore_auth_core::OAuthClient, token: procore_auth_core::Token) -> Result<(), Box<dyn std::error::Error>> {
//! # let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let grant = RefreshTokenGrant::new(oauth, TowerTransport::new(http.clone()));
//! let registry: TokenRegistry<u64> = TokenRegistry::builder(grant)
//!     .store(KeyedFileStore::new("/var/lib/my-app/procore-tokens"))
//!     .build();
//! registry.insert(42, token).await?; // user 42 just authorized the app
//!
//! let procore = ProcoreAuthLayer::new(registry.clone()).layer(http);
//! let mut request = http::Request::get("https://api.procore.com/rest/v1.0/me")
//!     .body(Full::new(Bytes::new()))?;
//! request.extensions_mut().insert(42_u64); // on behalf of user 42
//! let response = procore.oneshot(request).await?;
//! # Ok(()) }
//! ```
//!
//! # Replaying after a 401
//!
//! A request can only be replayed if it was copied before it was sent. The default
//! [`CloneRequest`] policy copies requests whose body type is `Clone` (such as
//! `Full<Bytes>` or `String`). For other bodies (streams), use
//! [`ProcoreAuthLayer::without_replay`] or a [`ReplayPolicy`] of your own: when a
//! request cannot be replayed, its 401 is returned unchanged, and the token is still
//! refreshed for the requests that follow.
//!
//! # Redirects
//!
//! The layer follows no redirects. To follow them, put tower-http's
//! [`FollowRedirect`] *outside* (wrapping) this layer, so that every hop is a new
//! request through it and passes the request policy: a hop to another origin (a file
//! download's storage host) goes without our token, a hop back to the API origin gets
//! it again, and a 401 counts as Procore rejecting the token only from a hop that
//! carried it (a foreign 401 comes back as is, with no refresh or replay).
//!
//! ```no_run
//! # use bytes::Bytes;
//! # use http_body_util::Full;
//! # use hyper_util::client::legacy::Client;
//! # use hyper_util::rt::TokioExecutor;
//! # use procore_auth_tower::ProcoreAuthLayer;
//! # use tower::ServiceExt;
//! use tower::ServiceBuilder;
//! use tower_http::follow_redirect::FollowRedirectLayer;
//!
//! # async fn run(manager: procore_auth_core::TokenManager) -> Result<(), Box<dyn std::error::Error>> {
//! # let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let procore = ServiceBuilder::new()
//!     .layer(FollowRedirectLayer::new()) // outside: sees each hop's response
//!     .layer(ProcoreAuthLayer::new(manager)) // inside: decides each hop
//!     .service(http);
//! let request = http::Request::get("https://api.procore.com/rest/v1.0/files/7")
//!     .body(Full::new(Bytes::new()))?;
//! let file = procore.oneshot(request).await?;
//! # Ok(()) }
//! ```
//!
//! The other order is unsafe. With `FollowRedirect` *inside* the layer, the layer signs
//! the first request and never sees the hops: the bearer then rides every hop that
//! `FollowRedirect`'s own credential filter lets through (with a policy that has no
//! `FilterCredentials`, such as `Limited` alone, that is every hop to a foreign origin;
//! tower-http 0.6, which reqwest 0.13 still uses, also re-added it on a second hop on
//! the same foreign origin), a hop back to the API origin goes without the token (the
//! standard filter dropped it), and a 401 from the storage host is taken for Procore's,
//! costing a refresh and a replay of the whole chain. (All of this is tested.)
//!
//! tower-http's standard policy follows 307/308 only for bodies known to be empty; to
//! re-send other bodies, add a [`clone_body_fn`] policy.
//!
//! [`FollowRedirect`]: https://docs.rs/tower-http/0.7/tower_http/follow_redirect/struct.FollowRedirect.html
//! [`clone_body_fn`]: https://docs.rs/tower-http/0.7/tower_http/follow_redirect/policy/fn.clone_body_fn.html
//!
//! [Tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod future;
mod layer;
mod replay;
mod retry;
mod service;
mod transport;

pub use error::Error;
pub use future::ResponseFuture;
pub use layer::ProcoreAuthLayer;
pub use replay::{CloneRequest, NoReplay, ReplayPolicy};
pub use retry::{ProcoreRetry, ProcoreRetryLayer};
pub use service::ProcoreAuth;
pub use transport::{TowerTransport, REQUEST_TIMEOUT};
