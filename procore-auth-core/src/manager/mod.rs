//! [`TokenManager`]: fresh-or-refresh, single-flight, skew, back-off, rejection.
//!
//! - `mod.rs`: the public API and its builder;
//! - `state.rs`: the refresh phases and their synchronous transitions (every decision);
//! - `refresh.rs`: the async work of one refresh (store, source, save-before-publish);
//! - `policy.rs`: the timing rules (skew, back-off, jitter, `Retry-After` clamp).

mod policy;
mod refresh;
mod state;

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::cell::{Published, TokenCell};
use crate::clock::{unix_millis, CoarseTime};
use crate::rate_limit::{RateLimit, RateLimitPolicy, RateLimitState};
use crate::registry::Tenant;
use crate::spawn::{AmbientTokio, Spawn};
use crate::store::{StoreError, TokenStore};
use crate::{
    Bearer, Clock, Environment, Error, Generation, RequestPolicy, SystemClock, Token, TokenSource,
};

pub use policy::{Jitter, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_STORE_RECHECK};

use policy::RefreshPolicy;
use state::{Freshness, RefreshState, Step, TokenView};

/// Owns the current Procore token for every request that uses it.
///
/// Cheap to clone (clones share one token). Adapters call [`bearer`](Self::bearer)
/// before each request and [`rejected`](Self::rejected) after a 401:
///
/// - a fresh token is returned without locking, allocating or reading the clock;
/// - inside the refresh skew (5 minutes before expiry for a 90-minute token), one
///   caller refreshes while everyone else keeps using the still-valid token;
/// - once expired, every caller waits for the same single refresh;
/// - a refresh that was started runs to the end, is saved and is published even if
///   every caller waiting for it was dropped (see [`Spawn`]);
/// - a failed refresh is shared by everyone waiting for it, and the next attempt
///   backs off exponentially, with jitter, on the monotonic clock;
/// - the first 401 for a token refreshes it (or joins the refresh under way); 401s
///   for a token that was already replaced are answered with the new one;
/// - `invalid_grant` ends in [`Error::ReauthorizationRequired`]: no token call is
///   made until [`set_token`](Self::set_token), except that a configured store is
///   re-read now and then (every [`DEFAULT_STORE_RECHECK`]) in case a peer process
///   saved a newer pair.
///
/// What a persistent 401 costs: Procore also answers 401 when the app is not
/// installed in the company a request names. Each new token gets one refresh for its
/// first 401, so such requests cost one refresh per token generation (shared by all
/// requests in flight with it), plus the replay each request gets once.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use procore_auth_core::{
///     AccessToken, BoxFuture, Clock, Error, ManualClock, Token, TokenManager, TokenSource,
/// };
///
/// #[derive(Debug)]
/// struct Minting; // stands in for RefreshTokenGrant / ClientCredentialsGrant
/// impl TokenSource for Minting {
///     fn fetch<'a>(&'a self, _: Option<&'a Token>, clock: &'a dyn Clock)
///         -> BoxFuture<'a, Result<Token, Error>>
///     {
///         Box::pin(async move {
///             let now = clock.now();
///             Token::new(AccessToken::new("minted"), None, now, Some(now + Duration::from_secs(5400)))
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let manager = TokenManager::builder(Minting).clock(clock.clone()).build();
/// let bearer = manager.bearer().await?;
/// assert_eq!(bearer.header_value(), "Bearer minted");
/// assert_eq!(manager.metrics().refreshes, 1);
///
/// // Fresh: answered from the cell, no refresh.
/// manager.bearer().await?;
/// assert_eq!(manager.metrics().refreshes, 1);
///
/// // 86 minutes later the token is inside the 5-minute skew: refreshed.
/// clock.advance(Duration::from_secs(86 * 60));
/// let next = manager.bearer().await?;
/// assert!(next.generation() > bearer.generation());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    handle: Arc<Handle>,
}

/// The user-facing owner of [`Inner`]. A running refresh holds `Inner` too (it must
/// publish its result), and `Inner` holds the running refresh: when the last handle
/// goes, forgetting the refresh breaks that cycle. A spawned refresh still finishes.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.lock_state().abandon();
    }
}

type SharedRefresh = Shared<BoxFuture<'static, Result<Bearer, Error>>>;

struct Inner {
    cell: TokenCell,
    coarse: CoarseTime,
    clock: Arc<dyn Clock>,
    source: Arc<dyn TokenSource>,
    store: Option<Arc<dyn TokenStore>>,
    spawner: Arc<dyn Spawn>,
    /// Shared by every manager of a registry.
    request_policy: Arc<RequestPolicy>,
    refresh_policy: RefreshPolicy,
    rate_limit_policy: RateLimitPolicy,
    rate_limit: RateLimitState,
    /// Whose token this is, for a manager of a registry: named in its logs and in
    /// the `ReauthorizationRequired` errors it returns.
    tenant: Option<Tenant>,
    state: Mutex<RefreshState<SharedRefresh>>,
    last_store_error: Mutex<Option<StoreError>>,
    /// Held by `set_token` and `revoke` for their whole run (store I/O included), so a
    /// token set during a revocation is neither revoked nor erased from the store by it.
    replacing: futures_util::lock::Mutex<()>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    rejections: AtomicU64,
    store_adoptions: AtomicU64,
    store_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counters for metrics. Read with [`TokenManager::metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// New tokens obtained and published (from the token source or the store).
    pub refreshes: u64,
    /// Refresh attempts that failed.
    pub refresh_failures: u64,
    /// Calls to [`TokenManager::rejected`] (401s reported by adapters).
    pub rejections: u64,
    /// Tokens taken over from the store because a peer had stored a newer one.
    pub store_adoptions: u64,
    /// Failed store reads or writes.
    pub store_failures: u64,
    /// Responses whose `X-Rate-Limit-*` headers were malformed, and so ignored.
    pub rate_limit_headers_ignored: u64,
}

/// Configures a [`TokenManager`]. Made by [`TokenManager::builder`].
pub struct TokenManagerBuilder {
    source: Arc<dyn TokenSource>,
    token: Option<Token>,
    store: Option<Arc<dyn TokenStore>>,
    clock: Arc<dyn Clock>,
    spawner: Arc<dyn Spawn>,
    request_policy: Option<Arc<RequestPolicy>>,
    refresh_policy: RefreshPolicy,
    rate_limit_policy: RateLimitPolicy,
    tenant: Option<Tenant>,
}

impl TokenManagerBuilder {
    /// Starts with `token` (for example, the result of a code exchange). Without one,
    /// the first request loads the store or asks the source.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Persists every new token to `store` before it is used, and re-reads it before
    /// each refresh so a token a peer process stored is adopted instead of refreshed.
    pub fn store(mut self, store: impl TokenStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Reads time from `clock` (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Runs refreshes to completion with `spawner` (default: [`AmbientTokio`]).
    pub fn spawner(mut self, spawner: impl Spawn + 'static) -> Self {
        self.spawner = Arc::new(spawner);
        self
    }

    /// Refreshes this long before expiry, capped at a tenth of the token's lifetime
    /// (default: 5 minutes).
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.refresh_policy.skew = skew;
        self
    }

    /// Backs off from `base` after the first failed refresh, doubling up to `max`
    /// (defaults: [`DEFAULT_BACKOFF_BASE`], [`DEFAULT_BACKOFF_MAX`]). A server's
    /// `Retry-After` is honoured when longer, up to
    /// [`max_retry_after`](Self::max_retry_after).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.refresh_policy.backoff_base = base;
        self.refresh_policy.backoff_max = max.max(base);
        self
    }

    /// Spreads back-off delays with `jitter` (default: [`Jitter::equal`]).
    pub fn backoff_jitter(mut self, jitter: Jitter) -> Self {
        self.refresh_policy.jitter = jitter;
        self
    }

    /// Honours a token endpoint's `Retry-After` up to `max` (default:
    /// [`DEFAULT_BACKOFF_MAX`]); longer requests are treated as `max`, so one absurd
    /// header cannot stop refreshing for years.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.refresh_policy.max_retry_after = max;
        self
    }

    /// While reauthorization is required, re-reads the store at most this often
    /// (default: [`DEFAULT_STORE_RECHECK`]).
    pub fn store_recheck(mut self, interval: Duration) -> Self {
        self.refresh_policy.store_recheck = interval;
        self
    }

    /// Which requests adapters put the token on (default: [`RequestPolicy::new`] for
    /// the source's environment, or production if the source does not say).
    pub fn request_policy(mut self, policy: RequestPolicy) -> Self {
        self.request_policy = Some(Arc::new(policy));
        self
    }

    /// How requests treat the token's spent rate-limit budget (default:
    /// [`RateLimitPolicy::Observe`]). The budget is read from the `X-Rate-Limit-*`
    /// headers of every response to a request that carried the token; see
    /// [`TokenManager::rate_limit`].
    pub fn rate_limit(mut self, policy: RateLimitPolicy) -> Self {
        self.rate_limit_policy = policy;
        self
    }

    /// For a registry: its managers share one store and (unless configured with their
    /// own) one policy, and know their tenant.
    pub(crate) fn for_tenant(
        mut self,
        tenant: Tenant,
        store: Arc<dyn TokenStore>,
        policy: Arc<RequestPolicy>,
    ) -> Self {
        self.tenant = Some(tenant);
        self.store = Some(store);
        self.request_policy.get_or_insert(policy);
        self
    }

    /// Builds the manager.
    pub fn build(self) -> TokenManager {
        let request_policy = self
            .request_policy
            .unwrap_or_else(|| Arc::new(default_request_policy(&*self.source)));
        let inner = Inner {
            cell: TokenCell::default(),
            coarse: self.clock.coarse(),
            clock: self.clock,
            source: self.source,
            state: Mutex::new(RefreshState::new(self.store.is_some())),
            store: self.store,
            spawner: self.spawner,
            request_policy,
            refresh_policy: self.refresh_policy,
            rate_limit_policy: self.rate_limit_policy,
            rate_limit: RateLimitState::default(),
            tenant: self.tenant,
            last_store_error: Mutex::default(),
            replacing: futures_util::lock::Mutex::new(()),
            counters: Counters::default(),
        };
        if let Some(token) = self.token {
            inner.cell.publish(token, inner.refresh_policy.skew);
        }
        TokenManager {
            handle: Arc::new(Handle {
                inner: Arc::new(inner),
            }),
        }
    }
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("source", &self.source)
            .field("store", &self.store)
            .field("spawner", &self.spawner)
            .field("refresh_policy", &self.refresh_policy)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// Starts configuring a manager that gets new tokens from `source`.
    pub fn builder(source: impl TokenSource + 'static) -> TokenManagerBuilder {
        Self::builder_shared(Arc::new(source))
    }

    /// A builder for a manager sharing `source` with others (a registry's tenants).
    pub(crate) fn builder_shared(source: Arc<dyn TokenSource>) -> TokenManagerBuilder {
        TokenManagerBuilder {
            source,
            token: None,
            store: None,
            clock: Arc::new(SystemClock),
            spawner: Arc::new(AmbientTokio),
            request_policy: None,
            refresh_policy: RefreshPolicy::default(),
            rate_limit_policy: RateLimitPolicy::default(),
            tenant: None,
        }
    }

    /// Whether this manager holds anything a fresh one loaded from the store would
    /// not: a clone held by a request or a caller, a refresh not yet finished, a token
    /// the store failed to save (possibly the only live refresh token), or a failed
    /// refresh cooling down. A registry never evicts such a manager.
    pub(crate) fn in_use(&self) -> bool {
        let inner = &self.handle.inner;
        Arc::strong_count(&self.handle) > 1
            || Arc::strong_count(inner) > 1
            || inner.last_store_failed()
            || inner.lock_state().is_cooling_down(inner.clock.monotonic())
    }

    /// The tenant whose token this is, for a manager of a registry.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.handle.inner.tenant.as_ref()
    }

    /// The bearer header for the next request, refreshing first if needed.
    ///
    /// The decision is made when this is called: a refresh it starts runs even if the
    /// returned future is dropped.
    ///
    /// # Errors
    ///
    /// When no usable token exists and none could be obtained: the refresh's error
    /// (shared by all waiters), [`Error::BackingOff`] while a failed refresh cools
    /// down, or [`Error::ReauthorizationRequired`].
    #[inline]
    pub fn bearer(&self) -> BearerFuture {
        match self.fresh_bearer() {
            Some(bearer) => BearerFuture::ready(bearer),
            None => self.handle.inner.bearer_slow(),
        }
    }

    /// The bearer of the current token if it is fresh, without waiting: one atomic
    /// load of the cell and one of the coarse clock. `None` means "call
    /// [`bearer`](Self::bearer)".
    #[inline(always)] // the hot path of every request: a call would cost a sixth of it
    pub fn fresh_bearer(&self) -> Option<Bearer> {
        let inner = &self.handle.inner;
        match inner.cell.fresh_bearer(inner.coarse.millis()) {
            Some(bearer) => Some(bearer),
            None => inner.fresh_bearer_first(),
        }
    }

    /// Reports that the API answered 401 to a request that carried the token of
    /// `generation`, and gives the bearer to replay it with, if any.
    ///
    /// The first 401 for the current token refreshes it (once, however many requests
    /// report it); a 401 for a token that was already replaced is answered with the
    /// current one, without a refresh. `Ok(None)` means: do not replay, return the 401.
    ///
    /// # Errors
    ///
    /// As [`bearer`](Self::bearer).
    pub fn rejected(&self, generation: Generation) -> RejectedFuture {
        let inner = &self.handle.inner;
        bump(&inner.counters.rejections);
        tracing::debug!(
            generation = generation.get(),
            tenant = inner.tenant.as_ref().map(tracing::field::display),
            "procore token rejected with 401"
        );
        RejectedFuture {
            bearer: inner.decide(|state, view, now, policy, start| {
                state.on_rejected(view, generation, now, policy, start)
            }),
            rejected: generation,
        }
    }

    /// Replaces the token (after a new authorization, for example), saving it to the
    /// store first, and clears any back-off or reauthorization-required state.
    ///
    /// A refresh token alone ([`Token::from_refresh_token`]) is refreshed at once: the
    /// bearer returned is the new token's.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if saving failed. The token is in use even then. For a refresh
    /// token alone, the refresh's errors too, as [`bearer`](Self::bearer).
    pub async fn set_token(&self, token: Token) -> Result<Bearer, Error> {
        let inner = &self.handle.inner;
        let replacing = inner.replacing.lock().await;
        let saved = match &inner.store {
            Some(store) => store.save(&token, None).await,
            None => Ok(()),
        };
        let bearer = {
            let mut state = inner.lock_state();
            state.on_token_set();
            let published = inner.cell.publish(token, inner.refresh_policy.skew);
            published.bearer.clone()
        };
        drop(replacing);
        match saved {
            Ok(()) => inner.store_succeeded(),
            Err(error) => return Err(inner.store_failed(error).into()),
        }
        match bearer {
            Some(bearer) => Ok(bearer),
            None => self.bearer().await,
        }
    }

    /// Revokes the current token at the server (Procore revokes the access token and
    /// its refresh token), then forgets it: the token is withdrawn, the store is
    /// cleared, and every later call gets [`Error::ReauthorizationRequired`] (reason
    /// [`Revoked`](crate::ReauthorizationReason::Revoked)) without a token call, until
    /// [`set_token`](Self::set_token) (or a pair a peer process saves to the store).
    ///
    /// A refresh in flight is waited for first, and its result is what is revoked. A
    /// different pair in the store (a peer's newer one) is revoked too. Revoking an
    /// already-dead token succeeds, as it does at Procore.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bytes::Bytes;
    /// # use procore_auth_core::*;
    /// # #[derive(Debug)] struct Procore;
    /// # impl Transport for Procore {
    /// #     fn send(&self, _: http::Request<Bytes>) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
    /// #         Box::pin(async { Ok(http::Response::new(Bytes::from_static(b"{}"))) })
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// # let clock = ManualClock::at_unix(1_700_000_000);
    /// # let token = Token::new(AccessToken::new("a"), Some(RefreshToken::new("r")), clock.now(), Some(clock.now() + Duration::from_secs(5400)))?;
    /// let client = OAuthClient::new(Environment::production(), "id", ClientSecret::new("secret"));
    /// let manager = TokenManager::builder(RefreshTokenGrant::new(client, Procore))
    ///     .token(token)
    ///     .store(MemoryStore::new())
    /// #   .clock(clock)
    ///     .build();
    /// manager.revoke().await?; // "log out"
    /// assert!(matches!(
    ///     manager.bearer().await,
    ///     Err(Error::ReauthorizationRequired { reason: ReauthorizationReason::Revoked, .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The source's: [`Error::RevokeUnsupported`] for a [`TokenSource`] that cannot
    /// revoke, or the revoke endpoint's answer or transport failure. Nothing is
    /// changed then. [`Error::Store`] if the token was revoked but the store could not
    /// be cleared.
    pub async fn revoke(&self) -> Result<(), Error> {
        let inner = &self.handle.inner;
        let _replacing = inner.replacing.lock().await;
        // A caller that drops this future mid-revocation must not leave the manager
        // refusing every request: until the revocation is decided, dropping it undoes
        // the revoking state, as a failure would.
        let mut undo = UndoRevoking { inner, armed: true };
        // A refresh in flight would publish a pair this revocation never saw: wait.
        let current = loop {
            let refresh = {
                let mut state = inner.lock_state();
                let current = inner.cell.load_full().map(|current| current.token.clone());
                match state.on_revoke(current.clone()) {
                    Ok(()) => break current,
                    Err(refresh) => refresh,
                }
            };
            let _ = refresh.await;
        };
        // A panicking source or store must not leave the manager revoking forever.
        let revoked = AssertUnwindSafe(inner.revoke_at_server(current.as_ref()))
            .catch_unwind()
            .await
            .unwrap_or(Err(Error::SourcePanicked));
        if let Err(error) = revoked {
            drop(undo);
            tracing::warn!(%error, "procore token revocation failed; the token is kept");
            return Err(error);
        }
        undo.armed = false;
        {
            let mut state = inner.lock_state();
            if !state.on_revoked(inner.clock.monotonic()) {
                // A new token was set meanwhile: it stays, in memory and in the store.
                return Ok(());
            }
            inner.cell.clear();
        }
        tracing::info!("procore token revoked");
        if let Some(store) = &inner.store {
            match AssertUnwindSafe(store.clear())
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the token store panicked").into()))
            {
                Ok(()) => inner.store_succeeded(),
                Err(error) => return Err(inner.store_failed(error).into()),
            }
        }
        Ok(())
    }

    /// A copy of the current token, if any (for revoking it, for example).
    pub fn token(&self) -> Option<Token> {
        self.handle
            .inner
            .cell
            .load_full()
            .map(|published| published.token.clone())
    }

    /// Which requests adapters put the token on.
    pub fn policy(&self) -> &RequestPolicy {
        &self.handle.inner.request_policy
    }

    /// The current token's rate-limit budget, as the last response that carried it
    /// reported (and counted down since by requests admitted under
    /// [`RateLimitPolicy::Wait`] or [`FailFast`](RateLimitPolicy::FailFast)); `None`
    /// before the first report for this token.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let inner = &self.handle.inner;
        let generation = inner.cell.latest_generation();
        inner.rate_limit.snapshot(generation)
    }

    /// Records the `X-Rate-Limit-*` headers of a response to a request that carried
    /// the token of `generation`; responses for an older token are ignored.
    #[inline]
    pub(crate) fn record_rate_limit(&self, generation: Generation, headers: &http::HeaderMap) {
        let inner = &self.handle.inner;
        if inner.cell.latest_generation() == generation.get() {
            // `now` bounds absurd resets and turns a past one into "spent for a
            // second". Admission reads the precise clock, and must agree with this
            // (a coarse reading a tick behind would end that second at once); when
            // nothing is admitted (`Observe`), the coarse clock saves a system call.
            // (A coarse reading no ticker keeps current is `u64::MAX`: not a time.)
            let now = match (inner.rate_limit_policy, inner.coarse.millis()) {
                (RateLimitPolicy::Observe, coarse) if coarse != u64::MAX => coarse / 1000,
                _ => unix_seconds(inner.clock.now()),
            };
            inner.rate_limit.record(generation.get(), headers, now);
        }
    }

    /// Gives back the budget a request of `generation` took when it was admitted: it
    /// never reached the server (its connection failed).
    pub(crate) fn refund_rate_limit(&self, generation: Generation) {
        let inner = &self.handle.inner;
        if inner.rate_limit_policy != RateLimitPolicy::Observe {
            inner.rate_limit.refund(generation.get());
        }
    }

    /// Whether a request with the token of `generation` may go now, under the rate-limit
    /// policy: `Err` holds until when the budget is spent.
    #[inline]
    pub(crate) fn admit(&self, generation: Generation) -> Result<(), SystemTime> {
        let inner = &self.handle.inner;
        let probe = match inner.rate_limit_policy {
            RateLimitPolicy::Observe => return Ok(()),
            RateLimitPolicy::Wait { .. } => true,
            RateLimitPolicy::FailFast => false,
        };
        // The precise clock: the wait for a reset is computed from it too, and a
        // decision on the coarse one (up to a tick behind) would make waiters spin.
        let now = unix_seconds(inner.clock.now());
        inner
            .rate_limit
            .take(generation.get(), now, probe)
            .map_err(|reset| std::time::UNIX_EPOCH + Duration::from_secs(reset))
    }

    pub(crate) fn rate_limit_policy(&self) -> RateLimitPolicy {
        self.handle.inner.rate_limit_policy
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.handle.inner.clock
    }

    /// The counters so far.
    pub fn metrics(&self) -> Metrics {
        let counters = &self.handle.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Metrics {
            refreshes: read(&counters.refreshes),
            refresh_failures: read(&counters.refresh_failures),
            rejections: read(&counters.rejections),
            store_adoptions: read(&counters.store_adoptions),
            store_failures: read(&counters.store_failures),
            rate_limit_headers_ignored: self.handle.inner.rate_limit.ignored(),
        }
    }

    /// The last token-store failure, if the last store operation failed.
    pub fn last_store_error(&self) -> Option<StoreError> {
        self.handle
            .inner
            .last_store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Undoes a revocation's revoking state when dropped (see [`TokenManager::revoke`]).
struct UndoRevoking<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for UndoRevoking<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.lock_state().on_revoke_failed();
        }
    }
}

/// The future returned by [`TokenManager::bearer`].
///
/// Ready at once for a fresh token; otherwise it waits on the one shared refresh
/// (no allocation per waiter).
#[must_use = "futures do nothing unless polled"]
pub struct BearerFuture {
    state: Waiting,
}

enum Waiting {
    /// Taken when polled.
    Ready(Option<Bearer>),
    /// Boxed: errors are large, and a small future is cheaper to return and move.
    Failed(Option<Box<Error>>),
    Refresh {
        refresh: SharedRefresh,
        /// A still-valid token to use if the refresh fails.
        fallback: Option<Bearer>,
    },
}

impl BearerFuture {
    #[inline]
    fn ready(bearer: Bearer) -> Self {
        Self {
            state: Waiting::Ready(Some(bearer)),
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: Waiting::Failed(Some(Box::new(error))),
        }
    }
}

impl Future for BearerFuture {
    type Output = Result<Bearer, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            Waiting::Ready(bearer) => match bearer.take() {
                Some(bearer) => Poll::Ready(Ok(bearer)),
                None => panic!("BearerFuture polled after completion"),
            },
            Waiting::Failed(error) => match error.take() {
                Some(error) => Poll::Ready(Err(*error)),
                None => panic!("BearerFuture polled after completion"),
            },
            Waiting::Refresh { refresh, fallback } => {
                let result = std::task::ready!(Pin::new(refresh).poll(cx));
                Poll::Ready(result.or_else(|error| fallback.take().ok_or(error)))
            }
        }
    }
}

impl fmt::Debug for BearerFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Waiting::Ready(_) => "ready",
            Waiting::Failed(_) => "failed",
            Waiting::Refresh { .. } => "waiting for a refresh",
        };
        f.debug_struct("BearerFuture")
            .field("state", &state)
            .finish()
    }
}

/// The future returned by [`TokenManager::rejected`]: the bearer to replay with, if
/// the rejected token was (or is being) replaced.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct RejectedFuture {
    bearer: BearerFuture,
    rejected: Generation,
}

impl Future for RejectedFuture {
    type Output = Result<Option<Bearer>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let rejected = self.rejected;
        Pin::new(&mut self.bearer)
            .poll(cx)
            .map(|result| result.map(|bearer| (bearer.generation() != rejected).then_some(bearer)))
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("TokenManager")
            .field(
                "generation",
                &inner.cell.load_full().map(|current| current.generation()),
            )
            .field("source", &inner.source)
            .field("store", &inner.store)
            .field("tenant", &inner.tenant)
            .field("policy", &inner.request_policy)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, RefreshState<SharedRefresh>> {
        // Transitions only assign whole phases, so the state stays consistent even if
        // a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`TokenManager::fresh_bearer`] when the token did not look fresh: the coarse
    /// reading may not be kept current yet (the process's first token reads), so
    /// this starts its ticker if needed and reads again.
    #[cold]
    #[inline(never)]
    fn fresh_bearer_first(&self) -> Option<Bearer> {
        if self.coarse.millis() == crate::clock::NOT_TICKING {
            self.coarse.keep_current();
        }
        // Read again either way: another thread may have started the ticker since
        // this one found the reading not kept current.
        self.cell.fresh_bearer(self.coarse.millis())
    }

    #[cold]
    #[inline(never)]
    fn bearer_slow(self: &Arc<Self>) -> BearerFuture {
        self.decide(|state, view, now, policy, start| state.on_bearer(view, now, policy, start))
    }

    /// Runs `transition` on the current token under the state lock (so no refresh
    /// can publish between reading the token and deciding) and follows its step.
    fn decide(
        self: &Arc<Self>,
        transition: impl FnOnce(
            &mut RefreshState<SharedRefresh>,
            Option<TokenView<Bearer>>,
            Duration,
            &RefreshPolicy,
            &mut dyn FnMut(state::Reason) -> SharedRefresh,
        ) -> Step<SharedRefresh, Bearer>,
    ) -> BearerFuture {
        let wall = self.clock.now();
        let monotonic = self.clock.monotonic();
        let mut state = self.lock_state();
        let current = self.cell.load_full();
        let view = current
            .as_deref()
            .and_then(|published| view(published, wall));
        let mut started = None;
        let mut start = |reason| {
            let refresh = self.new_refresh(reason, current.clone());
            started = Some(refresh.clone());
            refresh
        };
        let step = transition(
            &mut state,
            view,
            monotonic,
            &self.refresh_policy,
            &mut start,
        );
        drop(state);
        // Outside the lock: a spawner may poll the refresh at once, and it publishes
        // under that lock.
        if let Some(refresh) = started {
            if self.spawner.spawn(refresh.map(drop).boxed()).is_err() {
                tracing::debug!(
                    "no spawner available; the procore token refresh is driven by its waiters"
                );
            }
        }
        match step {
            Step::UseCurrent(bearer) => BearerFuture::ready(bearer),
            Step::UseCurrentWhile(bearer, refresh) => {
                // Don't wait for a refresh ahead of expiry, but take its result if it
                // is ready, and help it along if nothing else drives it.
                let refreshed = refresh.now_or_never().and_then(Result::ok);
                BearerFuture::ready(refreshed.unwrap_or(bearer))
            }
            Step::Wait { refresh, fallback } => BearerFuture {
                state: Waiting::Refresh { refresh, fallback },
            },
            Step::Fail(error) => BearerFuture::failed(error.for_tenant(self.tenant.as_ref())),
        }
    }

    /// A new refresh, recorded in the phase by the caller (under the state lock, so no
    /// second refresh can start) and then handed to the spawner, which drives it to the
    /// end even if every waiter goes away.
    fn new_refresh(
        self: &Arc<Self>,
        reason: state::Reason,
        from: Option<Arc<Published>>,
    ) -> SharedRefresh {
        let refresh = Arc::clone(self).run_refresh(reason, from);
        match &self.tenant {
            // The refresh's logs name the tenant.
            Some(tenant) => refresh
                .instrument(tracing::info_span!("procore_tenant", tenant = %tenant))
                .boxed()
                .shared(),
            None => refresh.boxed().shared(),
        }
    }

    /// Revokes `current` and, if the store holds a different pair (a peer's), that one
    /// too.
    async fn revoke_at_server(&self, current: Option<&Token>) -> Result<(), Error> {
        let stored = match &self.store {
            Some(store) => store.load().await.ok().flatten(),
            None => None,
        };
        let stored =
            stored.filter(|stored| current.is_none_or(|current| !stored.same_credentials(current)));
        for token in current.into_iter().chain(stored.as_ref()) {
            self.source.revoke(token).await?;
        }
        Ok(())
    }

    fn store_failed(&self, error: StoreError) -> StoreError {
        bump(&self.counters.store_failures);
        tracing::warn!(%error, "procore token store failed; the token is still used in memory");
        self.set_last_store_error(Some(error.clone()));
        error
    }

    fn store_succeeded(&self) {
        self.set_last_store_error(None);
    }

    fn last_store_failed(&self) -> bool {
        self.last_store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn set_last_store_error(&self, error: Option<StoreError>) {
        *self
            .last_store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    unix_millis(time) / 1000
}

/// The policy for the source's environment (production if it does not say).
pub(crate) fn default_request_policy(source: &dyn TokenSource) -> RequestPolicy {
    RequestPolicy::new(source.environment().unwrap_or(&Environment::production()))
}

/// How the published token looks at wall-clock time `now`; `None` for a token with
/// no bearer (a refresh token alone), which the transitions treat as no token at all:
/// it is never handed out, and the refresh they start presents its refresh token.
fn view(published: &Published, now: SystemTime) -> Option<TokenView<Bearer>> {
    let bearer = published.bearer.clone()?;
    let freshness = if unix_millis(now) < published.refresh_at_millis {
        Freshness::Fresh
    } else if published.token.is_expired_at(now) {
        Freshness::Expired
    } else {
        Freshness::Due
    };
    Some(TokenView {
        generation: published.generation(),
        freshness,
        token: bearer,
    })
}

#[cfg(test)]
mod tests;
