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
//! let attached = authorized.map(|authorized| authorized.attach(request.headers_mut()));
//! // ... send `request`; say the API answered 401:
//! let status = http::StatusCode::UNAUTHORIZED;
//! if let Some(replay) = attached.and_then(|attached| attached.judge(status, &http::HeaderMap::new())) {
//!     if let Some(again) = replay.await? {
//!         // attach `again` to a copy of the request and send it; a 401 to the
//!         // replay is returned to the caller (`judge` says so).
//!         let mut copy = http::Request::get("https://api.procore.com/rest/v1.0/me").body(())?;
//!         let attached = again.attach(copy.headers_mut());
//!         assert!(attached.judge(status, &http::HeaderMap::new()).is_none());
//!     }
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, StatusCode, Uri};

use crate::{
    Bearer, BearerFuture, Error, RateLimitPolicy, RejectedFuture, RequestPolicy, TokenManager,
};

/// What [`TokenManager::authorize`] (or [`Tokens::authorize`]) decided for a request.
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

/// The token chosen for one attempt of one request, and the manager it came from.
#[derive(Clone, Debug)]
pub struct Authorized {
    manager: TokenManager,
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

    /// Puts the token (and the default company id) on the request, and returns what
    /// judging its response needs.
    #[inline]
    pub fn attach(self, headers: &mut HeaderMap) -> Attached {
        let Self {
            manager,
            bearer,
            attempt,
        } = self;
        let generation = bearer.generation();
        manager
            .policy()
            .attach_header(headers, bearer.into_header_value());
        Attached {
            manager,
            generation,
            attempt,
        }
    }
}

/// A request that carries our token: what judging its response needs.
#[derive(Clone, Debug)]
pub struct Attached {
    manager: TokenManager,
    generation: crate::Generation,
    attempt: Attempt,
}

impl Attached {
    /// The generation of the token the request carries.
    pub fn generation(&self) -> crate::Generation {
        self.generation
    }

    /// Whether this is the one replay after a 401.
    pub fn is_replay(&self) -> bool {
        self.attempt == Attempt::Replay
    }

    /// The manager whose token the request carries.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// Judges the response to this attempt, from the origin that received the token,
    /// and records the token's rate-limit budget from its headers. `Some` means
    /// Procore rejected the token: await the future for the token to replay with.
    /// `None` means: return the response (it is not a 401, or it answers the replay,
    /// which is never replayed again).
    #[inline]
    pub fn judge(&self, status: StatusCode, headers: &HeaderMap) -> Option<ReplayFuture> {
        self.manager.record_rate_limit(self.generation, headers);
        (status == StatusCode::UNAUTHORIZED && self.attempt == Attempt::First).then(|| {
            ReplayFuture {
                state: Replaying::Rejected {
                    rejected: self.manager.rejected(self.generation),
                    manager: self.manager.clone(),
                },
            }
        })
    }

    /// Reports that the attempt never reached the server (its connection failed), so
    /// it gives back the rate-limit budget it took.
    pub fn unsent(&self) {
        self.manager.refund_rate_limit(self.generation);
    }
}

/// Resolves to the token for a request that had to wait for one (or for its
/// rate-limit budget).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AuthorizeFuture {
    state: Awaiting,
}

#[derive(Debug)]
enum Awaiting {
    /// A token from the manager (a refresh, say).
    Token {
        bearer: BearerFuture,
        manager: TokenManager,
    },
    /// The reset of a spent rate-limit budget, then a new decision.
    Budget {
        reset: Pin<Box<tokio::time::Sleep>>,
        manager: TokenManager,
        /// Past this, the request fails instead of waiting for another reset.
        give_up: tokio::time::Instant,
    },
    Failed(Option<Box<Error>>),
}

impl AuthorizeFuture {
    fn failed(error: Error) -> Self {
        Self {
            state: Awaiting::Failed(Some(Box::new(error))),
        }
    }
}

impl Future for AuthorizeFuture {
    type Output = Result<Authorized, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match &mut self.state {
                Awaiting::Token { bearer, manager } => {
                    let bearer = std::task::ready!(Pin::new(bearer).poll(cx))?;
                    return Poll::Ready(Ok(Authorized {
                        manager: manager.clone(),
                        bearer,
                        attempt: Attempt::First,
                    }));
                }
                Awaiting::Budget {
                    reset,
                    manager,
                    give_up,
                } => {
                    std::task::ready!(reset.as_mut().poll(cx));
                    match manager.attempt_until(*give_up) {
                        Authorize::Ready(authorized) => return Poll::Ready(Ok(authorized)),
                        Authorize::Pending(next) => next.state,
                        Authorize::Skip => return Poll::Ready(Err(Error::TenantNotSelected)),
                    }
                }
                Awaiting::Failed(error) => {
                    let error = error
                        .take()
                        .map_or(Error::TenantNotSelected, |error| *error);
                    return Poll::Ready(Err(error));
                }
            };
            self.state = next;
        }
    }
}

/// Resolves to the token to replay a rejected request with, or `None` to return
/// the 401 to the caller. The replay is admitted by the rate-limit policy like any
/// request (it may wait for the budget).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ReplayFuture {
    state: Replaying,
}

#[derive(Debug)]
enum Replaying {
    Rejected {
        rejected: RejectedFuture,
        manager: TokenManager,
    },
    /// The replay's token's budget is spent: waiting as a first attempt would.
    Admitting(AuthorizeFuture),
}

impl Future for ReplayFuture {
    type Output = Result<Option<Authorized>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match &mut self.state {
                Replaying::Rejected { rejected, manager } => {
                    let Some(bearer) = std::task::ready!(Pin::new(rejected).poll(cx))? else {
                        return Poll::Ready(Ok(None));
                    };
                    match manager.admit(bearer.generation()) {
                        Ok(()) => {
                            return Poll::Ready(Ok(Some(Authorized {
                                manager: manager.clone(),
                                bearer,
                                attempt: Attempt::Replay,
                            })))
                        }
                        Err(reset_at) => match manager.over_budget(reset_at) {
                            Authorize::Pending(waiting) => Replaying::Admitting(waiting),
                            // `over_budget` always makes the request wait or fail.
                            Authorize::Ready(_) | Authorize::Skip => {
                                return Poll::Ready(Err(Error::RateLimited { reset_at }))
                            }
                        },
                    }
                }
                Replaying::Admitting(waiting) => {
                    let authorized = std::task::ready!(Pin::new(waiting).poll(cx))?;
                    return Poll::Ready(Ok(Some(Authorized {
                        attempt: Attempt::Replay,
                        ..authorized
                    })));
                }
            };
            self.state = next;
        }
    }
}

impl TokenManager {
    /// Decides whether a request to `uri` with `headers` gets our token (see
    /// [`RequestPolicy`]) and which one.
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

    /// The token for a request the policy gives one.
    #[inline]
    fn authorize_attempt(&self) -> Authorize {
        match self.fresh_bearer() {
            Some(bearer) => match self.admit(bearer.generation()) {
                Ok(()) => Authorize::Ready(Authorized {
                    manager: self.clone(),
                    bearer,
                    attempt: Attempt::First,
                }),
                Err(reset_at) => self.over_budget(reset_at),
            },
            None => Authorize::Pending(AuthorizeFuture {
                state: Awaiting::Token {
                    bearer: self.bearer(),
                    manager: self.clone(),
                },
            }),
        }
    }

    /// [`authorize_attempt`](Self::authorize_attempt) for a request that already
    /// waited for a reset and may wait until `give_up`.
    fn attempt_until(&self, give_up: tokio::time::Instant) -> Authorize {
        match self.authorize_attempt() {
            Authorize::Pending(AuthorizeFuture {
                state: Awaiting::Budget { reset, .. },
            }) => {
                let reset_at = reset.deadline();
                if reset_at > give_up {
                    return Authorize::Pending(AuthorizeFuture::failed(Error::RateLimited {
                        reset_at: self.clock().now()
                            + reset_at.saturating_duration_since(tokio::time::Instant::now()),
                    }));
                }
                self.over_budget_until(reset, give_up)
            }
            decided => decided,
        }
    }

    /// A request whose token's budget is spent until `reset_at`: it waits for the
    /// reset or fails, as the rate-limit policy says.
    #[cold]
    pub(crate) fn over_budget(&self, reset_at: std::time::SystemTime) -> Authorize {
        let wait = reset_at
            .duration_since(self.clock().now())
            .unwrap_or_default();
        match self.rate_limit_policy() {
            RateLimitPolicy::Wait { max_wait } if wait <= max_wait => {
                let now = tokio::time::Instant::now();
                let reset = Box::pin(tokio::time::sleep_until(now + wait));
                self.over_budget_until(reset, now + max_wait)
            }
            _ => Authorize::Pending(AuthorizeFuture::failed(Error::RateLimited { reset_at })),
        }
    }

    fn over_budget_until(
        &self,
        reset: Pin<Box<tokio::time::Sleep>>,
        give_up: tokio::time::Instant,
    ) -> Authorize {
        Authorize::Pending(AuthorizeFuture {
            state: Awaiting::Budget {
                reset,
                manager: self.clone(),
                give_up,
            },
        })
    }
}

/// Where adapters get each request's token: one [`TokenManager`] for every request,
/// or a [`TokenRegistry`](crate::TokenRegistry) and the way each request names its
/// tenant. Made with `From` (a manager; a registry, which finds the tenant's key in
/// the request's extensions) or [`TokenRegistry::keyed_by`](crate::TokenRegistry::keyed_by).
#[derive(Clone, Debug)]
pub struct Tokens {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Manager(TokenManager),
    Registry(Arc<dyn SelectTenant>),
}

/// Finds a request's tenant and its manager; implemented by the registry.
pub(crate) trait SelectTenant: Send + Sync + fmt::Debug {
    /// The policy every tenant's manager shares.
    fn policy(&self) -> &RequestPolicy;

    /// The manager of the request's tenant; `None` if the request names none.
    fn manager(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<TokenManager>;
}

impl Tokens {
    pub(crate) fn selecting(select: Arc<dyn SelectTenant>) -> Self {
        Self {
            kind: Kind::Registry(select),
        }
    }

    /// Decides whether a request to `uri` gets a token, and whose: the request's
    /// tenant's, named by its `extensions` (or `headers`), for a registry. A request
    /// for the API that names no tenant gets a future that fails with
    /// [`Error::TenantNotSelected`]: never another tenant's token.
    #[inline]
    pub fn authorize(&self, uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> Authorize {
        match &self.kind {
            Kind::Manager(manager) => manager.authorize(uri, headers),
            Kind::Registry(select) if select.policy().should_attach(uri, headers) => {
                Self::tenant_attempt(&**select, headers, extensions)
            }
            Kind::Registry(_) => Authorize::Skip,
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
        extensions: &Extensions,
    ) -> Authorize {
        match &self.kind {
            Kind::Manager(manager) => manager.authorize_origin(scheme, host, port, headers),
            Kind::Registry(select)
                if select
                    .policy()
                    .should_attach_to(scheme, host, port, headers) =>
            {
                Self::tenant_attempt(&**select, headers, extensions)
            }
            Kind::Registry(_) => Authorize::Skip,
        }
    }

    fn tenant_attempt(
        select: &dyn SelectTenant,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Authorize {
        match select.manager(headers, extensions) {
            Some(manager) => manager.authorize_attempt(),
            None => Authorize::Pending(AuthorizeFuture::failed(Error::TenantNotSelected)),
        }
    }

    /// The manager, when every request uses the same one.
    pub fn manager(&self) -> Option<&TokenManager> {
        match &self.kind {
            Kind::Manager(manager) => Some(manager),
            Kind::Registry(_) => None,
        }
    }

    /// Which requests get a token.
    pub fn policy(&self) -> &RequestPolicy {
        match &self.kind {
            Kind::Manager(manager) => manager.policy(),
            Kind::Registry(select) => select.policy(),
        }
    }
}

impl From<TokenManager> for Tokens {
    fn from(manager: TokenManager) -> Self {
        Self {
            kind: Kind::Manager(manager),
        }
    }
}
