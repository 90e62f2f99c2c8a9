//! [`reqwest-middleware`] that puts a valid Procore bearer token on every request.
//!
//! ```no_run
//! use procore_auth_core::{ClientSecret, Environment, OAuthClient};
//! use procore_auth_reqwest::ProcoreAuthMiddleware;
//! use reqwest_middleware::ClientBuilder;
//!
//! # async fn run(token: procore_auth_core::Token) -> Result<(), Box<dyn std::error::Error>> {
//! let oauth = OAuthClient::new(Environment::production(), "client-id", ClientSecret::new("secret"));
//! let client = ClientBuilder::new(reqwest::Client::new())
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
//! `ClientBuilder::new(client).with(TracingMiddleware).with(RetryTransientMiddleware)
//! .with(ProcoreAuthMiddleware)`. Every retry then passes through this middleware,
//! so it carries the current token, and a 401 is handled here (once) rather than being
//! mistaken for a transient failure.
//!
//! [`reqwest-middleware`]: https://docs.rs/reqwest-middleware
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod middleware;
mod transport;

pub use error::{auth_error, Error};
pub use middleware::ProcoreAuthMiddleware;
pub use transport::{ReqwestTransport, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
