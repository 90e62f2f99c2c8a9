//! The per-request protocol both adapters drive: authorize → attach → send → judge
//! the response → replay once.
//!
//! ```
//! use procore_auth_core::{Authorize, ManualClock, TokenManager};
//! # use procore_auth_core::{AccessToken, BoxFuture, Clock, Environment, Error, RequestPolicy, Token, TokenSource};
//! # #[derive(Debug)] struct Minting;
//! # impl TokenSource for Minting {
//! #     fn fetch<'a>(&'a self, _: Option<&'a Token>, clock: &'a dyn Clock) -> BoxFuture<'a, Result<Token, Error>> {
//! #         Box::pin(async move { let now = clock.now(); Token::new(AccessToken::new("minted"), None, now, Some(now + std::time::Duration::from_secs(5400))) })
//! #     }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let manager = TokenManager::builder(Minting).request_policy(RequestPolicy::new(&Environment::production())).build();
//! let mut request = http::Request::get("https://api.procore.com/rest/v1.0/me").body(())?;
//! let authorized = match manager.authorize(request.uri(), request.headers()) {
//!     Authorize::Skip => None, // not for Procore's API: send it untouched
//!     Authorize::Ready(authorized) => Some(authorized),
//!     Authorize::Pending(waiting) => Some(waiting.await?),
//! };
//! let attached = authorized.map(|authorized| manager.attach(authorized, request.headers_mut()));
//! // ... send `request`; say the API answered 401:
//! let status = http::StatusCode::UNAUTHORIZED;
//! if let Some(replay) = attached.and_then(|attached| manager.judge(attached, status)) {
//!     if let Some(again) = replay.await? {
//!         // attach `again` to a copy of the request and send it; a 401 to the
//!         // replay is returned to the caller (`judge` says so).
//!         let mut copy = http::Request::get("https://api.procore.com/rest/v1.0/me").body(())?;
//!         let attached = manager.attach(again, copy.headers_mut());
//!         assert!(manager.judge(attached, status).is_none());
//!     }
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, StatusCode, Uri};

use crate::{Bearer, BearerFuture, Error, Generation, RejectedFuture, TokenManager};

/// What [`TokenManager::authorize`] decided for a request.
#[derive(Debug)]
pub enum Authorize {
    /// The request does not get our token (another origin, or it carries its own
    /// `Authorization`): send it untouched, and its response means nothing to us.
    Skip,
    /// A fresh token: attach it now.
    Ready(Authorized),
    /// Wait for a token first.
    Pending(AuthorizeFuture),
}

/// The token chosen for one attempt of one request.
#[derive(Clone, Debug)]
pub struct Authorized {
    bearer: Bearer,
    attempt: Attempt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    First,
    Replay,
}

impl Authorized {
    /// The token's bearer header and generation.
    pub fn bearer(&self) -> &Bearer {
        &self.bearer
    }

    /// Whether this is the one replay after a 401.
    pub fn is_replay(&self) -> bool {
        self.attempt == Attempt::Replay
    }
}

/// What judging the response to an attempt needs, once its token is attached:
/// small and `Copy`, so an adapter keeps it for the whole call at no cost.
#[derive(Clone, Copy, Debug)]
pub struct Attached {
    generation: Generation,
    attempt: Attempt,
}

impl Attached {
    /// The generation of the token the request carries.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Whether this is the one replay after a 401.
    pub fn is_replay(&self) -> bool {
        self.attempt == Attempt::Replay
    }
}

/// Resolves to the token for a request that had to wait for one.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AuthorizeFuture {
    bearer: BearerFuture,
}

impl Future for AuthorizeFuture {
    type Output = Result<Authorized, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.bearer).poll(cx).map(|result| {
            result.map(|bearer| Authorized {
                bearer,
                attempt: Attempt::First,
            })
        })
    }
}

/// Resolves to the token to replay a rejected request with, or `None` to return
/// the 401 to the caller.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ReplayFuture {
    rejected: RejectedFuture,
}

impl Future for ReplayFuture {
    type Output = Result<Option<Authorized>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rejected).poll(cx).map(|result| {
            result.map(|bearer| {
                bearer.map(|bearer| Authorized {
                    bearer,
                    attempt: Attempt::Replay,
                })
            })
        })
    }
}

impl TokenManager {
    /// Decides whether a request to `uri` with `headers` gets our token (see
    /// [`RequestPolicy`](crate::RequestPolicy)) and which one.
    #[inline]
    pub fn authorize(&self, uri: &Uri, headers: &HeaderMap) -> Authorize {
        if self.policy().should_attach(uri, headers) {
            self.authorize_attempt()
        } else {
            Authorize::Skip
        }
    }

    /// [`authorize`](Self::authorize) for clients whose URLs are not [`http::Uri`]s:
    /// the request's scheme, host and explicit port.
    #[inline]
    pub fn authorize_origin(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        headers: &HeaderMap,
    ) -> Authorize {
        if self.policy().should_attach_to(scheme, host, port, headers) {
            self.authorize_attempt()
        } else {
            Authorize::Skip
        }
    }

    #[inline]
    fn authorize_attempt(&self) -> Authorize {
        match self.fresh_bearer() {
            Some(bearer) => Authorize::Ready(Authorized {
                bearer,
                attempt: Attempt::First,
            }),
            None => Authorize::Pending(AuthorizeFuture {
                bearer: self.bearer(),
            }),
        }
    }

    /// Puts the token (and the default company id) on the request, and returns what
    /// judging its response needs.
    #[inline]
    pub fn attach(&self, authorized: Authorized, headers: &mut HeaderMap) -> Attached {
        let attached = Attached {
            generation: authorized.bearer.generation(),
            attempt: authorized.attempt,
        };
        let header = authorized.bearer.into_header_value();
        self.policy().attach_header(headers, header);
        attached
    }

    /// Judges the response to an attempt, from the origin that received the token.
    /// `Some` means Procore rejected the token: await the future for the token to
    /// replay with. `None` means: return the response (it is not a 401, or it answers
    /// the replay, which is never replayed again).
    pub fn judge(&self, attached: Attached, status: StatusCode) -> Option<ReplayFuture> {
        (status == StatusCode::UNAUTHORIZED && attached.attempt == Attempt::First).then(|| {
            ReplayFuture {
                rejected: self.rejected(attached.generation),
            }
        })
    }
}
