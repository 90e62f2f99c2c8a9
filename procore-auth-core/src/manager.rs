//! [`TokenManager`]: fresh-or-refresh, single-flight, skew, back-off, rejection.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;

use crate::cell::{Published, TokenCell};
use crate::clock::{unix_millis, CoarseTime};
use crate::error::ReauthorizationReason;
use crate::store::{StoreError, TokenStore};
use crate::token::DEFAULT_REFRESH_SKEW;
use crate::{
    Bearer, Clock, Environment, Error, Generation, RequestPolicy, SystemClock, Token, TokenSource,
};

/// The first back-off delay after a failed refresh; it doubles per consecutive failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest back-off delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// After a 401 has caused a refresh, further 401s within this interval do not cause
/// another: Procore also answers 401 when the app is not installed in a company, and
/// refreshing for every such request would churn the rotating refresh token.
pub const DEFAULT_MIN_REJECTION_INTERVAL: Duration = Duration::from_secs(10);

/// Owns the current Procore token for every request that uses it.
///
/// Cheap to clone (clones share one token). Adapters call [`bearer`](Self::bearer)
/// before each request and [`rejected`](Self::rejected) after a 401:
///
/// - a fresh token is returned without locking, allocating or reading the clock;
/// - inside the refresh skew (5 minutes before expiry for a 90-minute token), one
///   caller refreshes while everyone else keeps using the still-valid token;
/// - once expired, every caller waits for the same single refresh;
/// - a failed refresh is shared by everyone waiting for it, and the next attempt
///   backs off exponentially, with jitter;
/// - `invalid_grant` ends in [`Error::ReauthorizationRequired`], after which no
///   token call is made until [`set_token`](Self::set_token).
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

/// The user-facing owner of [`Inner`]. An in-flight refresh holds `Inner` too (it
/// must publish its result); when the last handle goes, dropping the stored refresh
/// breaks that cycle.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.lock_state().inflight = None;
    }
}

type SharedRefresh = Shared<BoxFuture<'static, Result<Bearer, Error>>>;

struct Inner {
    cell: TokenCell,
    coarse: CoarseTime,
    clock: Arc<dyn Clock>,
    source: Arc<dyn TokenSource>,
    store: Option<Arc<dyn TokenStore>>,
    policy: RequestPolicy,
    config: Config,
    state: Mutex<RefreshState>,
    counters: Counters,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    skew: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    min_rejection_interval: Duration,
}

#[derive(Default)]
struct RefreshState {
    inflight: Option<SharedRefresh>,
    failure: Option<Failure>,
    terminal: Option<Error>,
    last_rejection_refresh: Option<SystemTime>,
    last_store_error: Option<StoreError>,
}

struct Failure {
    error: Arc<Error>,
    consecutive: u32,
    retry_at: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshReason {
    /// No token yet, or it expired: callers wait.
    Expired,
    /// Inside the skew window: the token still works meanwhile.
    DueSoon,
    /// The API answered 401 for it.
    Rejected,
}

impl RefreshReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::DueSoon => "due",
            Self::Rejected => "rejected",
        }
    }
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
}

/// Configures a [`TokenManager`]. Made by [`TokenManager::builder`].
pub struct TokenManagerBuilder {
    source: Arc<dyn TokenSource>,
    token: Option<Token>,
    store: Option<Arc<dyn TokenStore>>,
    clock: Arc<dyn Clock>,
    policy: Option<RequestPolicy>,
    config: Config,
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

    /// Refreshes this long before expiry, capped at a tenth of the token's lifetime
    /// (default: 5 minutes).
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.config.skew = skew;
        self
    }

    /// Backs off from `base` after the first failed refresh, doubling up to `max`
    /// (defaults: [`DEFAULT_BACKOFF_BASE`], [`DEFAULT_BACKOFF_MAX`]). A server's
    /// `Retry-After` is honoured when longer.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max.max(base);
        self
    }

    /// See [`DEFAULT_MIN_REJECTION_INTERVAL`].
    pub fn min_rejection_interval(mut self, interval: Duration) -> Self {
        self.config.min_rejection_interval = interval;
        self
    }

    /// Which requests adapters put the token on (default: [`RequestPolicy::new`] for
    /// the source's environment, or production if the source does not say).
    pub fn request_policy(mut self, policy: RequestPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Builds the manager.
    pub fn build(self) -> TokenManager {
        let policy = self.policy.unwrap_or_else(|| {
            let environment = self.source.environment().cloned();
            RequestPolicy::new(&environment.unwrap_or_else(Environment::production))
        });
        let inner = Inner {
            cell: TokenCell::default(),
            coarse: self.clock.coarse(),
            clock: self.clock,
            source: self.source,
            store: self.store,
            policy,
            config: self.config,
            state: Mutex::default(),
            counters: Counters::default(),
        };
        if let Some(token) = self.token {
            inner.cell.publish(token, inner.config.skew);
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
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// Starts configuring a manager that gets new tokens from `source`.
    pub fn builder(source: impl TokenSource + 'static) -> TokenManagerBuilder {
        TokenManagerBuilder {
            source: Arc::new(source),
            token: None,
            store: None,
            clock: Arc::new(SystemClock),
            policy: None,
            config: Config {
                skew: DEFAULT_REFRESH_SKEW,
                backoff_base: DEFAULT_BACKOFF_BASE,
                backoff_max: DEFAULT_BACKOFF_MAX,
                min_rejection_interval: DEFAULT_MIN_REJECTION_INTERVAL,
            },
        }
    }

    /// The bearer header for the next request, refreshing first if needed.
    ///
    /// # Errors
    ///
    /// When no usable token exists and none could be obtained: the refresh's error
    /// (shared by all waiters), [`Error::BackingOff`] while a failed refresh cools
    /// down, or [`Error::ReauthorizationRequired`].
    #[inline]
    pub fn bearer(&self) -> BearerFuture {
        // Not an `async fn`: its state machine costs more than the fresh path itself.
        match self.fresh_bearer() {
            Some(bearer) => BearerFuture {
                fresh: Some(bearer),
                waiting: None,
            },
            None => self.wait_for_bearer(),
        }
    }

    /// Waiting for a refresh involves I/O, so this path can afford a box; kept out of
    /// line so that [`bearer`](Self::bearer) inlines.
    #[cold]
    #[inline(never)]
    fn wait_for_bearer(&self) -> BearerFuture {
        let inner = Arc::clone(&self.handle.inner);
        BearerFuture {
            fresh: None,
            waiting: Some(async move { inner.bearer_slow().await }.boxed()),
        }
    }

    /// The bearer of the current token if it is fresh, without waiting: one atomic
    /// load of the cell and one of the coarse clock. `None` means "call
    /// [`bearer`](Self::bearer)".
    #[inline]
    pub fn fresh_bearer(&self) -> Option<Bearer> {
        let inner = &self.handle.inner;
        inner.cell.fresh_bearer(inner.coarse.millis())
    }

    /// Reports that the API answered 401 to a request that carried the token of
    /// `generation`, and returns the bearer to replay it with, if any.
    ///
    /// Refreshes only if `generation` is still the current token (so a thousand 401s
    /// for one token cause one refresh), and at most once per
    /// [`DEFAULT_MIN_REJECTION_INTERVAL`]. `Ok(None)` means: do not replay, return the
    /// 401 to the caller.
    ///
    /// # Errors
    ///
    /// As [`bearer`](Self::bearer).
    pub async fn rejected(&self, generation: Generation) -> Result<Option<Bearer>, Error> {
        let inner = &self.handle.inner;
        bump(&inner.counters.rejections);
        tracing::debug!(
            generation = generation.get(),
            "procore token rejected with 401"
        );
        let now = inner.clock.now();
        let refresh = {
            let mut state = inner.lock_state();
            let current = inner.cell.load_full();
            let Some(current) = current.filter(|current| current.generation() == generation) else {
                drop(state);
                // Someone already replaced the rejected token: replay with the new one.
                let bearer = self.bearer().await?;
                return Ok((bearer.generation() != generation).then_some(bearer));
            };
            if let Some(error) = &state.terminal {
                return Err(error.clone());
            }
            if let Some(inflight) = &state.inflight {
                inflight.clone()
            } else if state
                .last_rejection_refresh
                .is_some_and(|last| now < last + inner.config.min_rejection_interval)
            {
                return Ok(None);
            } else if let Some(error) = state.backing_off(now) {
                return Err(error);
            } else {
                inner.start_refresh(&mut state, Some(current), RefreshReason::Rejected)
            }
        };
        refresh.await.map(Some)
    }

    /// Replaces the token (after a new authorization, for example), saving it to the
    /// store first, and clears any back-off or reauthorization-required state.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if saving failed. The token is in use even then.
    pub async fn set_token(&self, token: Token) -> Result<Bearer, Error> {
        let inner = &self.handle.inner;
        let saved = match &inner.store {
            Some(store) => store.save(&token, None).await,
            None => Ok(()),
        };
        let bearer = {
            let mut state = inner.lock_state();
            state.terminal = None;
            state.failure = None;
            state.last_rejection_refresh = None;
            inner.cell.publish(token, inner.config.skew).bearer.clone()
        };
        match saved {
            Ok(()) => Ok(bearer),
            Err(error) => Err(inner.store_failed(error).into()),
        }
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
        &self.handle.inner.policy
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
        }
    }

    /// The last token-store failure, if the last store operation failed.
    pub fn last_store_error(&self) -> Option<StoreError> {
        self.handle.inner.lock_state().last_store_error.clone()
    }
}

/// The future returned by [`TokenManager::bearer`].
#[must_use = "futures do nothing unless polled"]
pub struct BearerFuture {
    /// Set when the token was fresh: ready at the first poll.
    fresh: Option<Bearer>,
    waiting: Option<BoxFuture<'static, Result<Bearer, Error>>>,
}

impl Future for BearerFuture {
    type Output = Result<Bearer, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(bearer) = self.fresh.take() {
            return Poll::Ready(Ok(bearer));
        }
        match &mut self.waiting {
            Some(waiting) => waiting.as_mut().poll(cx),
            None => panic!("BearerFuture polled after completion"),
        }
    }
}

impl fmt::Debug for BearerFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerFuture")
            .field("fresh", &self.fresh.is_some())
            .field("waiting", &self.waiting.is_some())
            .finish()
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
            .field("policy", &inner.policy)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl RefreshState {
    /// The error to return while a failed refresh is cooling down.
    fn backing_off(&self, now: SystemTime) -> Option<Error> {
        let failure = self.failure.as_ref()?;
        let retry_in = failure
            .retry_at
            .duration_since(now)
            .ok()
            .filter(|retry_in| !retry_in.is_zero())?;
        Some(Error::BackingOff {
            retry_in,
            last_error: Arc::clone(&failure.error),
        })
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, RefreshState> {
        // The state stays consistent even if a holder panicked: every critical section
        // only assigns whole fields.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn bearer_slow(self: &Arc<Self>) -> Result<Bearer, Error> {
        let now = self.clock.now();
        let (refresh, still_valid) = {
            let mut state = self.lock_state();
            let current = self.cell.load_full();
            if let Some(current) = &current {
                if unix_millis(now) < current.refresh_at_millis {
                    return Ok(current.bearer.clone());
                }
            }
            let still_valid = current
                .as_ref()
                .filter(|current| !current.token.is_expired_at(now))
                .map(|current| current.bearer.clone());
            if let Some(error) = &state.terminal {
                return still_valid.ok_or_else(|| error.clone());
            }
            if let Some(inflight) = &state.inflight {
                let inflight = inflight.clone();
                match still_valid {
                    Some(bearer) => {
                        drop(state);
                        // Somebody is already refreshing ahead of expiry: don't wait for
                        // it, but help it along in case whoever started it was cancelled.
                        let refreshed = inflight.now_or_never().and_then(Result::ok);
                        return Ok(refreshed.unwrap_or(bearer));
                    }
                    None => (inflight, None),
                }
            } else if let Some(error) = state.backing_off(now) {
                return still_valid.ok_or(error);
            } else {
                let reason = if still_valid.is_some() {
                    RefreshReason::DueSoon
                } else {
                    RefreshReason::Expired
                };
                (self.start_refresh(&mut state, current, reason), still_valid)
            }
        };
        // A caller that started a refresh ahead of expiry falls back to the old, still
        // valid token if the refresh fails; the failure is recorded for back-off.
        refresh.await.or_else(|error| still_valid.ok_or(error))
    }

    /// Starts the single refresh and records it as in flight. Called with the state
    /// lock held, so no second refresh can start.
    fn start_refresh(
        self: &Arc<Self>,
        state: &mut RefreshState,
        from: Option<Arc<Published>>,
        reason: RefreshReason,
    ) -> SharedRefresh {
        let inner = Arc::clone(self);
        let refresh = async move { inner.run_refresh(from, reason).await }
            .boxed()
            .shared();
        state.inflight = Some(refresh.clone());
        refresh
    }

    async fn run_refresh(
        &self,
        from: Option<Arc<Published>>,
        reason: RefreshReason,
    ) -> Result<Bearer, Error> {
        let from_generation = from.as_ref().map(|from| from.generation());
        tracing::debug!(
            generation = from_generation.map(Generation::get),
            reason = reason.as_str(),
            "procore token refresh started"
        );
        let from_token = from.as_ref().map(|from| &from.token);
        // A panicking user-supplied source must not leave the refresh in flight forever.
        let obtained = AssertUnwindSafe(self.obtain_token(from_token))
            .catch_unwind()
            .await
            .unwrap_or(Err(Error::SourcePanicked));
        self.finish_refresh(from_generation, reason, obtained)
    }

    /// Gets the next token: a newer one from the store if a peer saved one, else from
    /// the source, persisting the result before it is published.
    async fn obtain_token(&self, from: Option<&Token>) -> Result<Token, Error> {
        let stored = self.load_store().await;
        let newer_stored = stored
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|stored| is_newer(stored, from));
        let now = self.clock.now();
        if let Some(newer) = newer_stored {
            if !newer.is_expired_at(now) {
                bump(&self.counters.store_adoptions);
                tracing::info!("adopted a newer procore token from the token store");
                return Ok(newer.clone());
            }
        }
        // Refresh from the newest pair we know of; compare-and-swap against what the
        // store held when we read it.
        let base = newer_stored.or(from);
        let expected = match &stored {
            Some(stored) => stored.as_ref(),
            None => from,
        };
        match self.source.fetch(base, &*self.clock).await {
            Ok(token) => {
                self.save_store(&token, expected).await;
                Ok(token)
            }
            Err(error) if error.is_invalid_grant() => {
                // A peer may have rotated the pair after we read the store.
                if let Some(Some(peer)) = self.load_store().await {
                    if base.is_none_or(|base| !peer.same_credentials(base)) {
                        bump(&self.counters.store_adoptions);
                        tracing::info!("refresh token was rejected; adopted a peer's token");
                        return Ok(peer);
                    }
                }
                let description = match &error {
                    Error::TokenEndpoint {
                        error: Some(error), ..
                    } => error.description.clone(),
                    _ => None,
                };
                Err(Error::ReauthorizationRequired {
                    reason: ReauthorizationReason::InvalidGrant { description },
                })
            }
            Err(error) => Err(error),
        }
    }

    /// `None` if there is no store or it could not be read.
    async fn load_store(&self) -> Option<Option<Token>> {
        let store = self.store.as_ref()?;
        match store.load().await {
            Ok(stored) => Some(stored),
            Err(error) => {
                self.store_failed(error);
                None
            }
        }
    }

    async fn save_store(&self, token: &Token, expected: Option<&Token>) {
        if let Some(store) = &self.store {
            match store.save(token, expected).await {
                Ok(()) => self.lock_state().last_store_error = None,
                Err(error) => {
                    self.store_failed(error);
                }
            }
        }
    }

    fn store_failed(&self, error: StoreError) -> StoreError {
        bump(&self.counters.store_failures);
        tracing::warn!(%error, "procore token store failed; the token is still used in memory");
        self.lock_state().last_store_error = Some(error.clone());
        error
    }

    fn finish_refresh(
        &self,
        from_generation: Option<Generation>,
        reason: RefreshReason,
        obtained: Result<Token, Error>,
    ) -> Result<Bearer, Error> {
        let now = self.clock.now();
        let mut state = self.lock_state();
        state.inflight = None;
        // `set_token` may have published a token meanwhile; a failure of this refresh
        // then says nothing about the current token.
        let still_current =
            self.cell.load_full().map(|current| current.generation()) == from_generation;
        match obtained {
            Ok(token) => {
                // Published even if `set_token` ran meanwhile: this token's refresh
                // token is the only live one of its rotation chain.
                let published = self.cell.publish(token, self.config.skew);
                bump(&self.counters.refreshes);
                state.failure = None;
                state.terminal = None;
                // Only a refresh that worked limits the next one: after a failure,
                // back-off decides when to try again.
                if reason == RefreshReason::Rejected {
                    state.last_rejection_refresh = Some(now);
                }
                tracing::info!(
                    generation = published.generation().get(),
                    reason = reason.as_str(),
                    "procore token refreshed"
                );
                Ok(published.bearer.clone())
            }
            Err(error) => {
                bump(&self.counters.refresh_failures);
                if !still_current {
                    tracing::warn!(%error, "procore token refresh failed after the token was replaced");
                } else if matches!(error, Error::ReauthorizationRequired { .. }) {
                    tracing::error!(%error, "procore token cannot be refreshed; the user must authorize again");
                    state.terminal = Some(error.clone());
                    if reason == RefreshReason::Rejected {
                        self.cell.clear();
                    }
                } else {
                    let consecutive = state.failure.as_ref().map_or(1, |f| f.consecutive + 1);
                    let delay = backoff_delay(consecutive, &self.config)
                        .max(error.retry_after().unwrap_or_default());
                    tracing::warn!(%error, retry_in = ?delay, consecutive, "procore token refresh failed");
                    state.failure = Some(Failure {
                        error: Arc::new(error.clone()),
                        consecutive,
                        retry_at: now + delay,
                    });
                }
                Err(error)
            }
        }
    }
}

/// Whether `stored` should replace `current`: it differs and is not older. (The store
/// keeps whole seconds, so "not older" is judged in whole seconds.)
fn is_newer(stored: &Token, current: Option<&Token>) -> bool {
    current.is_none_or(|current| {
        !stored.same_credentials(current)
            && unix_seconds(stored.issued_at()) >= unix_seconds(current.issued_at())
    })
}

fn unix_seconds(time: SystemTime) -> u64 {
    unix_millis(time) / 1000
}

/// Exponential back-off with "equal jitter": half the delay is fixed, half random, so
/// a fleet of processes that failed together does not retry together.
fn backoff_delay(consecutive_failures: u32, config: &Config) -> Duration {
    let doublings = consecutive_failures.saturating_sub(1).min(31);
    let ceiling = config
        .backoff_base
        .saturating_mul(1 << doublings)
        .min(config.backoff_max);
    let half = ceiling / 2;
    let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = match jitter_nanos {
        0 => Duration::ZERO,
        nanos => Duration::from_nanos(crate::random::jitter_u64() % nanos),
    };
    half + jitter
}

#[cfg(test)]
mod tests;
