//! [`reqwest-middleware`] that puts a valid Procore bearer token on every request.
//!
//! ```no_run
//! use procore_auth_core::{ClientSecret, Environment, OAuthClient};
//! use procore_auth_reqwest::ProcoreAuthMiddleware;
//! use reqwest_middleware::ClientBuilder;
//!
//! # async fn run(token: procore_auth_core::Token) -> Result<(), Box<dyn std::error::Error>> {
//! let oauth = OAuthClient::new(Environment::production(), "client-id", ClientSecret::new("secret"));
//! // A client that follows no redirects itself: the middleware follows them.
//! let client = ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
//!     .with(ProcoreAuthMiddleware::from_token(oauth, token)?)
//!     .build();
//! let me = client.get("https://api.procore.com/rest/v1.0/me").send().await?;
//! println!("{}", me.status());
//! # Ok(()) }
//! ```
//!
//! Each request to Procore (as decided by the manager's
//! [`RequestPolicy`](procore_auth_core::RequestPolicy)) gets `Authorization: Bearer …`,
//! marked sensitive. Tokens are refreshed ahead of expiry by
//! [`TokenManager`](procore_auth_core::TokenManager); after a 401 the token is
//! refreshed once and the request replayed once. A request whose body cannot be
//! cloned (a stream) is not replayed: its 401 is returned, and the token is still
//! refreshed for the requests that follow.
//!
//! Token calls go through a separate, plain `reqwest::Client` ([`ReqwestTransport`]),
//! never through the client this middleware wraps.
//!
//! # Many Procore users through one client
//!
//! Give the middleware a [`TokenRegistry`](procore_auth_core::TokenRegistry) and name
//! each request's tenant with `with_extension`: one client and one connection pool
//! serve every user, each with their own token and refresh. A request for the API
//! that names no tenant fails with
//! [`Error::TenantNotSelected`](procore_auth_core::Error::TenantNotSelected).
//!
//! ```no_run
//! # use procore_auth_core::{KeyedFileStore, RefreshTokenGrant, TokenRegistry};
//! # use procore_auth_reqwest::{ProcoreAuthMiddleware, ReqwestTransport};
//! # async fn run(oauth: procore_auth_core::OAuthClient, token: procore_auth_core::Token) -> Result<(), Box<dyn std::error::Error>> {
//! let grant = RefreshTokenGrant::new(oauth, ReqwestTransport::new()?);
//! let registry: TokenRegistry<u64> = TokenRegistry::builder(grant)
//!     .store(KeyedFileStore::new("/var/lib/my-app/procore-tokens"))
//!     .build();
//! registry.insert(42, token).await?; // user 42 just authorized the app
//!
//! let client = reqwest_middleware::ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
//!     .with(ProcoreAuthMiddleware::new(registry.clone()))
//!     .build();
//! let me = client
//!     .get("https://api.procore.com/rest/v1.0/me")
//!     .with_extension(42_u64) // on behalf of user 42
//!     .send()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Redirects
//!
//! Our bearer goes to the API origin only, on every hop. The middleware follows
//! redirects itself, on a client that follows none ([`client_builder`] makes one:
//! `redirect::Policy::none()` plus timeouts), up to [`MAX_REDIRECTS`]:
//!
//! - each hop asks the request policy whether it gets the token, so a hop to any other
//!   origin goes without it (and without the default `Procore-Company-Id`), and a hop
//!   back to the API origin gets it again;
//! - a 401 counts as Procore rejecting the token only from a hop that carried it: a 401
//!   from a storage host comes back to the caller, with no refresh and no replay;
//! - RFC 9110 method rules: 303, and 301/302 after a POST, become a GET without the
//!   body; 307/308 keep method and body, which needs a copy: a streaming body is not
//!   copied, so its 307/308 comes back as is;
//! - a caller's own `Authorization`, `Cookie` and `Proxy-Authorization` are dropped for
//!   good at the first hop to another origin, as browsers and reqwest do.
//!
//! Past [`MAX_REDIRECTS`] the redirect response itself is returned. Middleware added
//! after this one sees every hop; middleware before it sees one request.
//!
//! If the wrapped client follows redirects itself (reqwest's default policy), the
//! middleware sees only the first hop, which then goes with the token, and cannot
//! control what reqwest sends after it: reqwest drops `Authorization` only where a hop
//! changes origin from the *previous* hop, so API → other/a → other/b sends the bearer
//! to other/b. The middleware notices such responses (their URL is not the one it
//! sent), returns them without acting on a 401, and logs one warning; build the client
//! with [`client_builder`].
//!
//! # Errors
//!
//! When no token can be had, requests fail with
//! [`reqwest_middleware::Error::Middleware`] wrapping a [`procore_auth_core::Error`];
//! [`auth_error`] digs it out:
//!
//! ```
//! # fn check(error: reqwest_middleware::Error) {
//! if let Some(procore_auth_core::Error::ReauthorizationRequired { .. }) =
//!     procore_auth_reqwest::auth_error(&error)
//! {
//!     // send the user through the authorization flow again
//! }
//! # }
//! ```
//!
//! # With other middleware
//!
//! Put retries *outside* (before) this middleware and tracing outermost:
//! `ClientBuilder::new(client_builder().build()?).with(TracingMiddleware).with(ProcoreRetryMiddleware::new(policy))
//! .with(ProcoreAuthMiddleware::new(manager))`. Every retry then passes through this
//! middleware, so it carries the current token, and a 401 is handled here (once)
//! rather than being mistaken for a transient failure. Use [`ProcoreRetryMiddleware`]
//! rather than `reqwest-retry`, which retries 429 on its own schedule and ignores
//! `Retry-After` and the rate-limit reset that Procore asks clients to honour.
//!
//! # Features
//!
//! TLS for the clients this crate builds ([`client_builder`] and
//! [`ReqwestTransport`]); Procore is HTTPS only, so real use needs one:
//!
//! - `rustls` (default): rustls with the aws-lc-rs provider and the platform's
//!   certificate verifier.
//! - `native-tls`: the platform's TLS library: OpenSSL on Linux (building needs its
//!   headers and `pkg-config`), Security.framework on macOS, SChannel on Windows. Use
//!   it with `default-features = false`; with both features on, reqwest uses
//!   native-tls.
//!
//! With neither, only `http://` origins work (tests, the `procore-auth-testkit`
//! emulator).
//!
//! [`reqwest-middleware`]: https://docs.rs/reqwest-middleware
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod middleware;
mod redirect;
mod retry;
mod transport;

pub use error::{auth_error, Error};
pub use middleware::ProcoreAuthMiddleware;
pub use redirect::{client_builder, MAX_REDIRECTS};
pub use retry::ProcoreRetryMiddleware;
pub use transport::{ReqwestTransport, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
