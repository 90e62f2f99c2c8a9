//! The emulator handle and its builder.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fault::{ApiFault, TokenFault};
use crate::rate_limit::{Limits, Window};
use crate::state::{Config, Owner, Shared, State, OOB_REDIRECT_URI};
use crate::stats::{ApiRequest, Stats};
use crate::user::{UserId, UserRecord, UserStats};
use crate::{routes, server};

/// The default registered client's id.
const DEFAULT_CLIENT_ID: &str = "testkit-client-id";
/// The default registered client's secret.
const DEFAULT_CLIENT_SECRET: &str = "testkit-client-secret";
/// Procore's access-token lifetime today: 90 minutes.
const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(5400);

/// A group of routes, for [`EmulatorBuilder::latency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `POST /oauth/token`.
    Token,
    /// `POST /oauth/revoke`.
    Revoke,
    /// `GET /oauth/token/info`.
    TokenInfo,
    /// Every `/rest/` route.
    Api,
    /// `GET /oauth/authorize`.
    Authorize,
}

/// An access token (and refresh token) as the token endpoint would return it.
///
/// # Security
///
/// The tokens are live credentials for the emulator (only): `Debug` prints them, on purpose, so
/// leakage tests can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The bearer token for API calls: opaque, JWT-shaped, several hundred characters.
    pub access_token: String,
    /// The single-use refresh token; `None` for client-credentials tokens.
    pub refresh_token: Option<String>,
    /// Seconds the access token lives from `created_at`, as the token response claims (the
    /// server may stop accepting it earlier: see [`EmulatorBuilder::expire_early`] and
    /// [`EmulatorBuilder::floor_issue_times`]).
    pub expires_in: u64,
    /// When the token was minted, in whole Unix seconds (floored) on the emulator's (shifted)
    /// clock. Token responses leave it out with [`EmulatorBuilder::floor_issue_times`].
    pub created_at: i64,
    /// The user the tokens act for: `GET /rest/v1.0/me` answers this user's identity, and
    /// refreshing keeps it.
    pub user: UserId,
}

/// A running emulator of Procore's OAuth 2.0 server and REST API on `127.0.0.1`.
///
/// Dropping it shuts the server down: the port stops accepting, open connections (hanging
/// requests included) are closed.
///
/// # Example
///
/// ```no_run
/// use procore_auth_testkit::{Emulator, TokenFault};
///
/// #[tokio::test]
/// async fn survives_a_lost_refresh_response() {
///     let emulator = Emulator::start().await;
///     let grant = emulator.issue_token();
///     emulator.push_token_fault(TokenFault::RotateThenDrop);
///     // ... run the client under test against `emulator.base_url()` with `grant` ...
///     assert_eq!(emulator.stats().refresh_token_grants, 1);
/// }
/// # fn main() {}
/// ```
pub struct Emulator {
    shared: Arc<Shared>,
    base_url: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url)
            .field("client_id", &self.shared.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts an emulator with the defaults on `127.0.0.1` and a free port.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or if called outside a Tokio runtime.
    pub async fn start() -> Emulator {
        Self::builder().start().await
    }

    /// A builder to configure the emulator before starting it.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The base URL of both the auth endpoints and the API, `http://127.0.0.1:PORT`, without a
    /// trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The same server under another host name, `http://localhost:PORT`: the host that file
    /// downloads redirect to.
    pub fn alternate_host_url(&self) -> String {
        self.shared.alternate_host_url.clone()
    }

    /// The default registered client's id, `testkit-client-id`.
    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    /// The default registered client's secret, `testkit-client-secret`.
    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    /// The default user: the one [`issue_token`](Self::issue_token),
    /// [`authorize_code`](Self::authorize_code) and `/oauth/authorize` (without `login_hint`)
    /// act for. Id 4242, login `testkit.user@example.com`, name `Testkit User`.
    pub fn default_user(&self) -> UserId {
        UserId::DEFAULT
    }

    /// Adds a user with this login (the `login` of `GET /rest/v1.0/me`, and the `login_hint`
    /// that `/oauth/authorize` accepts); the name is `Testkit User <n>`, `n` the user's rank in
    /// creation order. Ids are distinct from every other user's and from the service account's.
    ///
    /// # Panics
    ///
    /// If another user already has this login.
    pub fn add_user(&self, login: impl Into<String>) -> UserId {
        match self.shared.lock().users.add(login.into()) {
            Ok(user) => user,
            Err(login) => panic!("procore-auth-testkit: a user with login {login:?} exists"),
        }
    }

    /// Every user, in creation order: the default user first, then those of
    /// [`EmulatorBuilder::users`], then those of [`add_user`](Self::add_user).
    pub fn users(&self) -> Vec<UserId> {
        self.shared.lock().users.ids()
    }

    /// The user's `login`, as `GET /rest/v1.0/me` reports it.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn user_login(&self, user: UserId) -> String {
        self.with_user(user, |record| record.login.clone())
    }

    /// The user's `name`, as `GET /rest/v1.0/me` reports it.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn user_name(&self, user: UserId) -> String {
        self.with_user(user, |record| record.name.clone())
    }

    /// Locks the state, checking that `user` exists.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    fn lock_for(&self, user: UserId) -> MutexGuard<'_, State> {
        let state = self.shared.lock();
        if state.users.get(user).is_none() {
            drop(state);
            panic!("procore-auth-testkit: {user} is not a user of this emulator");
        }
        state
    }

    /// Runs `f` on the user's record, under the lock.
    fn with_user<R>(&self, user: UserId, f: impl FnOnce(&mut UserRecord) -> R) -> R {
        let mut state = self.lock_for(user);
        let record = state.user_mut(user).expect("lock_for checked the user");
        f(record)
    }

    /// Issues an authorization code for the default client, the default user and
    /// `redirect_uri`, as if the user had approved `/oauth/authorize`. The code is single use
    /// and lives 10 minutes.
    ///
    /// `redirect_uri` is not checked against the registered URIs, so tests can set up
    /// mismatches; exchanging the code requires the same `redirect_uri`.
    pub fn authorize_code(&self, redirect_uri: &str) -> String {
        self.authorize_code_for(self.default_user(), redirect_uri)
    }

    /// [`authorize_code`](Self::authorize_code) as if `user` had approved: the tokens the code
    /// is exchanged for act for `user`.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn authorize_code_for(&self, user: UserId, redirect_uri: &str) -> String {
        let now = self.shared.now();
        self.lock_for(user)
            .issue_code(&self.shared.config.client_id, redirect_uri, user, now)
    }

    /// Mints a live access + refresh token pair for the default client and the default user,
    /// as an authorization-code grant would, without a token-endpoint call (no counter moves).
    /// The expiry knobs ([`EmulatorBuilder::expire_early`],
    /// [`EmulatorBuilder::floor_issue_times`]) apply to it as to every grant.
    pub fn issue_token(&self) -> TokenGrant {
        self.issue_token_for(self.default_user())
    }

    /// [`issue_token`](Self::issue_token) for `user`: the tokens act for `user`
    /// ([`TokenGrant::user`]), and so do those that refreshing them yields.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn issue_token_for(&self, user: UserId) -> TokenGrant {
        let now = self.shared.now_millis();
        let config = &self.shared.config;
        let minted = self
            .lock_for(user)
            .mint(config, &config.client_id, Owner::User(user), now);
        minted
            .into_grant()
            .expect("a user's token converts to a TokenGrant")
    }

    /// Queues a fault: each token-endpoint call takes the oldest queued one, whatever its
    /// user. Push `n` times to fault the next `n` calls.
    ///
    /// A call takes a fault from this queue first; only when it is empty does it take one from
    /// its user's queue ([`push_token_fault_for`](Self::push_token_fault_for)).
    pub fn push_token_fault(&self, fault: TokenFault) {
        self.shared.lock().token_faults.push_back(fault);
    }

    /// Queues a fault for `user` only: the next token-endpoint call **of that user** takes the
    /// oldest one, and other users' calls never do. Push `n` times to fault the user's next
    /// `n` calls: `n` × [`TokenFault::Status`]`(503)` keep the user's refreshes failing (with
    /// the refresh token left live) for `n` calls while every other user refreshes normally.
    ///
    /// A call is the user's when it presents one of the user's refresh tokens
    /// (`grant_type=refresh_token`) or authorization codes (`grant_type=authorization_code`),
    /// known to the server, whether still usable or not. Client-credentials calls, and calls
    /// with an unknown or missing credential, belong to no user and only take global faults
    /// ([`push_token_fault`](Self::push_token_fault)), which also come first.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn push_token_fault_for(&self, user: UserId, fault: TokenFault) {
        self.with_user(user, |record| record.token_faults.push_back(fault));
    }

    /// Queues a fault: each `/rest/` call (any method) takes the oldest queued one. Push `n`
    /// times to fault the next `n` calls. A faulted call counts against no rate-limit budget.
    ///
    /// `push_api_fault(ApiFault::Unavailable { retry_after_secs: 2 })` answers the next call
    /// 503 with `Retry-After: 2`; [`ApiFault::UnavailableHttpDate`] sends the same as an
    /// HTTP-date. With [`EmulatorBuilder::record_api_log`], [`api_log`](Self::api_log) then shows
    /// when (on the server's clock) and with which method the client came back.
    pub fn push_api_fault(&self, fault: ApiFault) {
        self.shared.lock().api_faults.push_back(fault);
    }

    /// Expires every access token issued so far: they answer 401 from now on. Refresh tokens
    /// stay usable; tokens issued later are unaffected.
    pub fn expire_all_tokens(&self) {
        self.shared.lock().expire_all();
    }

    /// [`expire_all_tokens`](Self::expire_all_tokens) for `user`'s access tokens only: other
    /// users' tokens (and client-credentials tokens) stay live.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn expire_tokens_of(&self, user: UserId) {
        self.lock_for(user).expire_user(user);
    }

    /// Revokes every access and refresh token issued so far, as `POST /oauth/revoke` would:
    /// the user must authorize again.
    pub fn revoke_all_tokens(&self) {
        self.shared.lock().revoke_all();
    }

    /// [`revoke_all_tokens`](Self::revoke_all_tokens) for `user`'s tokens only: that user must
    /// authorize again, other users are unaffected.
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn revoke_tokens_of(&self, user: UserId) {
        self.lock_for(user).revoke_user(user);
    }

    /// A consistent snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Every `/rest/` request so far, in the order they arrived (and were counted against
    /// their rate limits), when [`EmulatorBuilder::record_api_log`] is on; empty otherwise.
    pub fn api_log(&self) -> Vec<ApiRequest> {
        self.shared.lock().api_log.clone()
    }

    /// A consistent snapshot of `user`'s counters (see [`UserStats`] for what counts as the
    /// user's).
    ///
    /// # Panics
    ///
    /// If `user` is not a user of this emulator.
    pub fn user_stats(&self, user: UserId) -> UserStats {
        self.with_user(user, |record| record.stats.clone())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Wake requests held open by `TokenFault::Hang`, then stop the accept loop, which owns
        // every connection task: aborting it closes the listener and all connections at once.
        self.shutdown.send_replace(true);
        self.server.abort();
    }
}

/// Configures an [`Emulator`]; [`EmulatorBuilder::start`] runs it.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    clients: Vec<(String, String)>,
    redirect_uris: Vec<String>,
    access_token_lifetime: Duration,
    clock_offset_secs: i64,
    latency: HashMap<Route, Duration>,
    forbidden_company: Option<u64>,
    floor_issue_times: bool,
    expire_early: Duration,
    users: usize,
    rate_limit: Option<(u64, Duration)>,
    spike_limit: Option<(u64, Duration)>,
    record_api_log: bool,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            redirect_uris: Vec::new(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            clock_offset_secs: 0,
            latency: HashMap::new(),
            forbidden_company: None,
            floor_issue_times: false,
            expire_early: Duration::ZERO,
            users: 1,
            rate_limit: None,
            spike_limit: None,
            record_api_log: false,
        }
    }
}

impl EmulatorBuilder {
    /// The lifetime of access tokens, reported as `expires_in` (whole seconds; default
    /// 5400 s). [`Duration::ZERO`] mints tokens that are already expired.
    ///
    /// By default a token is accepted until exactly `expires_in` after the instant it was
    /// minted, with millisecond precision, as Procore (Doorkeeper, which stores sub-second
    /// timestamps) does, while the response's `created_at` is that instant floored to whole
    /// seconds: a client computing `created_at + expires_in` expires its token up to a second
    /// *before* the server does, never after. [`floor_issue_times`](Self::floor_issue_times) and
    /// [`expire_early`](Self::expire_early) make the server expire tokens sooner than that.
    pub fn access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_token_lifetime = lifetime;
        self
    }

    /// Models an independent RFC 6749 server that keeps issue times in whole seconds
    /// (default: off). When on, for access tokens from every grant (and
    /// [`Emulator::issue_token`]):
    ///
    /// * the server accepts a token until `expires_in` after its issue time **floored to the
    ///   whole second**, not after the exact instant it was minted, so it dies up to one second
    ///   before `receive time + expires_in`;
    /// * token responses (`POST /oauth/token`) **omit `created_at`**, which RFC 6749 does not
    ///   define, so a client falls back to its own clock (the time it sent the request or
    ///   received the answer) plus `expires_in`, and believes the token lives up to a second
    ///   longer than the server will accept it. (Were `created_at` sent, a client would compute
    ///   exactly the server's expiry.)
    ///
    /// A request in that last second gets 401 `"The access token expired"` on the `/rest/`
    /// routes and on `/oauth/token/info`. `/oauth/token/info` still reports `created_at`, and
    /// [`TokenGrant::created_at`] still holds the floored issue time.
    ///
    /// How early the token dies depends on where in its second it was minted; for a fixed
    /// margin use [`expire_early`](Self::expire_early). Both can be combined.
    pub fn floor_issue_times(mut self, floor: bool) -> Self {
        self.floor_issue_times = floor;
        self
    }

    /// Makes the server stop accepting access tokens `early` before they claim to expire
    /// (default: [`Duration::ZERO`]; millisecond precision): a token minted at `t` with
    /// `expires_in` is refused from `t + expires_in − early` on. Token responses are unchanged
    /// (`expires_in` and a truthful `created_at`), so a client that trusts them keeps using a
    /// token the server already refuses: the `/rest/` routes and `/oauth/token/info` answer
    /// 401 `"The access token expired"`, deterministically, for the last `early` of the
    /// claimed lifetime. `/oauth/token/info` reports `expires_in_seconds` up to the real
    /// expiry.
    ///
    /// Applies to access tokens from every grant (and [`Emulator::issue_token`]). An `early`
    /// at least as long as the lifetime mints tokens that are refused at once.
    pub fn expire_early(mut self, early: Duration) -> Self {
        self.expire_early = early;
        self
    }

    /// Shifts the emulator's clock by this many seconds (negative: behind): `created_at`,
    /// `expires_in_seconds` and the expiry of tokens are all judged on the shifted clock, as if
    /// the client's and the server's clocks disagreed.
    pub fn clock_offset_secs(mut self, offset: i64) -> Self {
        self.clock_offset_secs = offset;
        self
    }

    /// Delays the responses of `route` by `latency`, **after** the request was processed.
    ///
    /// The request takes effect at once, then the finished response is held back for
    /// `latency` before it is sent: on [`Route::Token`] a `refresh_token` grant has already
    /// burned the presented refresh token and stored the new pair (and
    /// [`Emulator::stats`] shows it in
    /// [`consumed_refresh_tokens`](crate::Stats::consumed_refresh_tokens)) while the response
    /// is still on its way. So `latency(Route::Token, Duration::from_millis(1500))` models
    /// "the server rotated, then the response arrives 1.5 s late": a client that waits gets
    /// the new pair late (during the wait the old refresh token is already burned: presenting
    /// it again is `invalid_grant`), and a client that times out during the wait has lost a
    /// response whose effects happened.
    ///
    /// Every request to the route is delayed, whatever its outcome (errors and scripted
    /// faults too), except [`TokenFault::Hang`] and [`TokenFault::RotateThenDrop`], which
    /// never answer. On [`Route::Api`] the token and company checks happen before the wait.
    /// Setting a route again replaces its latency.
    pub fn latency(mut self, route: Route, latency: Duration) -> Self {
        self.latency.insert(route, latency);
        self
    }

    /// API calls whose `Procore-Company-Id` header equals `company_id` get 403, as when the app
    /// is not connected to that company.
    pub fn forbidden_company(mut self, company_id: u64) -> Self {
        self.forbidden_company = Some(company_id);
        self
    }

    /// How many users the emulator starts with (default 1; 0 counts as 1): the default user,
    /// then users with logins `testkit.user2@example.com`, `testkit.user3@example.com`, … and
    /// names `Testkit User 2`, `Testkit User 3`, …, listed by [`Emulator::users`] in that
    /// order. [`Emulator::add_user`] adds more while the server runs.
    pub fn users(mut self, n: usize) -> Self {
        self.users = n;
        self
    }

    /// Enforces Procore's rate limit: each access token may make `limit` `/rest/` requests per
    /// `window` (millisecond precision; a zero window counts as 1 ms), in fixed windows. A
    /// token's window starts at its first API request and ends exactly `window` later; the
    /// next window starts at its first request after that. Requests without a token the
    /// server knows (none, or an unknown one) share one anonymous budget, as a per-address
    /// limit would on loopback; a known token keeps its budget when it expires or is revoked,
    /// and a refreshed token starts with a fresh one.
    ///
    /// Every `/rest/` response carries `X-Rate-Limit-Limit: <limit>`,
    /// `X-Rate-Limit-Remaining` (requests left in the window **after** this one) and
    /// `X-Rate-Limit-Reset` (the window's end in Unix seconds, **rounded up**: a request
    /// arriving at or after that second is always in a new window). The request after the
    /// `limit`-th in a window is answered 429 with the same headers (`Remaining: 0`),
    /// `Retry-After` (seconds until the window ends, rounded up) and a JSON body
    /// `{"errors":"You have surpassed the max number of requests for an hour. …"}`.
    ///
    /// 429s do not count against the budget (nor against the [spike
    /// limit](Self::spike_limit)): a client that keeps sending while limited does not push
    /// its reset back. Every other request counts, whatever its answer (401, 403 and 404
    /// included), except scripted [`ApiFault`]s, which answer in front of the limiter. The
    /// limiter runs before the token check: an over-limit request with an expired token gets
    /// 429, not 401.
    ///
    /// Without this knob each token still has its own budget of 3600 per hour, reported the
    /// same way but in windows aligned to the clock (the reset is the next full hour) and
    /// never enforced: `X-Rate-Limit-Remaining` stops at 0 and requests are served.
    pub fn rate_limit(mut self, limit: u64, window: Duration) -> Self {
        self.rate_limit = Some((limit, window));
        self
    }

    /// Enforces a spike limit: each access token (and the anonymous budget, as for
    /// [`rate_limit`](Self::rate_limit)) may make at most `limit` `/rest/` requests in any
    /// sliding `window` (millisecond precision; a zero window counts as 1 ms). A request that
    /// would exceed it is answered 429 with `Retry-After` (seconds until the oldest counted
    /// request leaves the window, rounded up) and the same JSON body. Procore documents no
    /// headers of its own for spike limits, so the `X-Rate-Limit-*` headers keep describing
    /// the main window ([`rate_limit`](Self::rate_limit), or the default hourly one), whose
    /// `Remaining` may well be above 0. 429s are not counted; the main limit is checked
    /// first.
    ///
    /// Counted in [`Stats::rate_limited_served`] and [`Stats::spike_limited_served`].
    pub fn spike_limit(mut self, limit: u64, window: Duration) -> Self {
        self.spike_limit = Some((limit, window));
        self
    }

    /// Records every `/rest/` request (method, path, status, arrival time on the emulator's
    /// clock, user) for [`Emulator::api_log`] (default: off). The log grows by one entry per
    /// request and is never trimmed: keep it off for long soak runs.
    pub fn record_api_log(mut self, record: bool) -> Self {
        self.record_api_log = record;
        self
    }

    /// Registers another client. The default client stays registered and cannot be replaced.
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.clients.push((id.into(), secret.into()));
        self
    }

    /// Registers another redirect URI, valid for every client. `http://localhost` and
    /// `urn:ietf:wg:oauth:2.0:oob` are registered by default. Matching is exact.
    pub fn redirect_uri(mut self, redirect_uri: impl Into<String>) -> Self {
        self.redirect_uris.push(redirect_uri.into());
        self
    }

    /// Binds `127.0.0.1:0` and starts serving in a task of the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or if called outside a Tokio runtime.
    pub async fn start(self) -> Emulator {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("procore-auth-testkit: cannot bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("procore-auth-testkit: the listener has no local address")
            .port();

        let mut clients: HashMap<String, String> = self.clients.into_iter().collect();
        clients.insert(
            DEFAULT_CLIENT_ID.to_owned(),
            DEFAULT_CLIENT_SECRET.to_owned(),
        );
        let mut redirect_uris: HashSet<String> =
            HashSet::from(["http://localhost".to_owned(), OOB_REDIRECT_URI.to_owned()]);
        redirect_uris.extend(self.redirect_uris);
        let config = Config {
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            clients,
            redirect_uris,
            access_token_lifetime_secs: self.access_token_lifetime.as_secs(),
            clock_offset_secs: self.clock_offset_secs,
            latency: self.latency,
            forbidden_company: self.forbidden_company,
            floor_issue_times: self.floor_issue_times,
            expire_early_millis: crate::state::millis(self.expire_early),
            limits: Limits {
                main: self
                    .rate_limit
                    .map_or(Limits::default().main, |(limit, window)| {
                        Window::new(limit, window)
                    }),
                enforced: self.rate_limit.is_some(),
                spike: self
                    .spike_limit
                    .map(|(limit, window)| Window::new(limit, window)),
            },
            record_api_log: self.record_api_log,
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(
            config,
            shutdown_rx.clone(),
            format!("http://localhost:{port}"),
        ));
        {
            let mut state = shared.lock();
            for _ in 1..self.users {
                state.users.add_numbered();
            }
        }
        let router = routes::router(Arc::clone(&shared));
        let server = tokio::spawn(server::serve(listener, router, shutdown_rx));
        Emulator {
            shared,
            base_url: format!("http://127.0.0.1:{port}"),
            shutdown,
            server,
        }
    }
}
