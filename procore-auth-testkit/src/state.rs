//! The emulator's configuration and mutable state, and the OAuth rules applied to them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::emulator::{Route, TokenGrant};
use crate::fault::{ApiFault, TokenFault};
use crate::params::Params;
use crate::rate_limit::{Budget, Limits};
use crate::stats::{ApiRequest, Stats};
use crate::token;
use crate::user::{UserId, UserRecord, Users};

/// The out-of-band redirect URI of installed apps: the code is shown, not redirected.
pub(crate) const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";
/// How long an authorization code can be exchanged (Procore: 10 minutes).
const CODE_LIFETIME_SECS: i64 = 600;

/// The Developer Managed Service Account behind client-credentials tokens.
pub(crate) const SERVICE_ACCOUNT_ID: u64 = 4343;
pub(crate) const SERVICE_ACCOUNT_LOGIN: &str = "testkit.service-account@example.com";
pub(crate) const SERVICE_ACCOUNT_NAME: &str = "Testkit Service Account";

/// The wall clock, as Unix milliseconds.
///
/// The emulator plays Procore's server, whose `created_at` is real Unix time that clients compare
/// with their own clock, so it must read the real clock (shifted by the configured offset in
/// [`Config::now_millis`]). This is the only place the crate reads it.
#[allow(clippy::disallowed_methods)]
fn wall_clock_unix_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Whole Unix seconds (floored) of a time in Unix milliseconds.
pub(crate) fn unix_secs(millis: i64) -> i64 {
    millis.div_euclid(1000)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What the builder sets; fixed once the server runs.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    /// Every registered client, the default one included: id → secret.
    pub(crate) clients: HashMap<String, String>,
    /// Registered redirect URIs, shared by all clients.
    pub(crate) redirect_uris: HashSet<String>,
    pub(crate) access_token_lifetime_secs: u64,
    pub(crate) clock_offset_secs: i64,
    pub(crate) latency: HashMap<Route, Duration>,
    pub(crate) forbidden_company: Option<u64>,
    /// Access tokens really expire `expires_in` after their issue time floored to whole
    /// seconds (not the exact issue time), and token responses omit `created_at`.
    pub(crate) floor_issue_times: bool,
    /// Access tokens really expire this many milliseconds before they claim to.
    pub(crate) expire_early_millis: i64,
    /// The per-token rate limits of the `/rest/` routes.
    pub(crate) limits: Limits,
    /// Whether `/rest/` requests are recorded in [`State::api_log`].
    pub(crate) record_api_log: bool,
}

impl Config {
    /// The emulator's own clock in Unix milliseconds: wall time shifted by the configured
    /// offset.
    pub(crate) fn now_millis(&self) -> i64 {
        wall_clock_unix_millis().saturating_add(self.clock_offset_secs.saturating_mul(1000))
    }

    /// The emulator's own clock in whole Unix seconds (floored).
    pub(crate) fn now(&self) -> i64 {
        unix_secs(self.now_millis())
    }

    /// When an access token issued at `issued_at_millis` really stops being accepted, in Unix
    /// milliseconds: `expires_in` after the exact issue time (as Doorkeeper, which stores
    /// sub-second timestamps), or after the floored one with `floor_issue_times`, minus
    /// `expire_early`.
    pub(crate) fn valid_until_millis(&self, issued_at_millis: i64) -> i64 {
        let base = if self.floor_issue_times {
            unix_secs(issued_at_millis).saturating_mul(1000)
        } else {
            issued_at_millis
        };
        let lifetime_millis = i64::try_from(self.access_token_lifetime_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        base.saturating_add(lifetime_millis)
            .saturating_sub(self.expire_early_millis)
    }

    /// The client authenticated by `client_id` + `client_secret` in the request body.
    pub(crate) fn authenticate<'p>(&self, params: &'p Params) -> Result<&'p str, GrantError> {
        let id = params.get("client_id").ok_or(GrantError::InvalidClient)?;
        let secret = params
            .get("client_secret")
            .ok_or(GrantError::InvalidClient)?;
        match self.clients.get(id) {
            Some(registered) if registered == secret => Ok(id),
            _ => Err(GrantError::InvalidClient),
        }
    }
}

/// Who a token acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The user who approved an authorization request.
    User(UserId),
    /// The client itself (client-credentials grant).
    ServiceAccount,
}

impl Owner {
    /// The Doorkeeper `resource_owner_id`: none for client-credentials tokens.
    pub(crate) fn resource_owner_id(self) -> Option<u64> {
        self.user().map(UserId::get)
    }

    /// The user, unless the token acts for the service account.
    pub(crate) fn user(self) -> Option<UserId> {
        match self {
            Self::User(user) => Some(user),
            Self::ServiceAccount => None,
        }
    }
}

/// What a grant minted: a token response's contents and whom the token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Minted {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) expires_in: u64,
    pub(crate) created_at: i64,
    pub(crate) owner: Owner,
}

impl Minted {
    /// The public view of a user's token; `None` for a client-credentials token.
    pub(crate) fn into_grant(self) -> Option<TokenGrant> {
        let user = self.owner.user()?;
        Some(TokenGrant {
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_in: self.expires_in,
            created_at: self.created_at,
            user,
        })
    }
}

/// The RFC 6749 §5.2 error answered by the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrantError {
    InvalidRequest(String),
    InvalidClient,
    InvalidGrant(&'static str),
    UnsupportedGrantType,
}

impl GrantError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        let (error, description) = match self {
            Self::InvalidRequest(why) => ("invalid_request", why.as_str()),
            Self::InvalidClient => (
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication \
                 included, or unsupported authentication method.",
            ),
            Self::InvalidGrant(why) => ("invalid_grant", *why),
            Self::UnsupportedGrantType => (
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            ),
        };
        serde_json::json!({ "error": error, "error_description": description })
    }
}

/// The grant types the token endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            "client_credentials" => Some(Self::ClientCredentials),
            _ => None,
        }
    }
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Unknown,
    Expired,
    Revoked,
}

impl TokenRejection {
    /// Doorkeeper's wording.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Unknown => "The access token is invalid",
            Self::Expired => "The access token expired",
            Self::Revoked => "The access token was revoked",
        }
    }
}

/// A live access token, as seen by a protected route.
#[derive(Debug, Clone)]
pub(crate) struct LiveToken {
    pub(crate) client_id: String,
    pub(crate) owner: Owner,
    /// Issue time, whole Unix seconds (floored).
    pub(crate) created_at: i64,
    /// When the server stops accepting it, Unix milliseconds.
    pub(crate) valid_until_millis: i64,
}

#[derive(Debug)]
struct CodeRecord {
    client_id: String,
    /// The user who approved the request.
    user: UserId,
    redirect_uri: String,
    expires_at: i64,
    used: bool,
}

#[derive(Debug)]
struct AccessRecord {
    client_id: String,
    owner: Owner,
    /// Issue time, whole Unix seconds (floored): the `created_at` reported.
    created_at: i64,
    /// When the server stops accepting it, Unix milliseconds (see
    /// [`Config::valid_until_millis`]).
    valid_until_millis: i64,
    refresh_token: Option<String>,
    revoked: bool,
    /// Set by [`State::expire_all`].
    expired: bool,
    /// The token's rate-limit budget.
    budget: Budget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Live,
    Consumed,
    Revoked,
}

#[derive(Debug)]
struct RefreshRecord {
    client_id: String,
    owner: Owner,
    access_token: String,
    status: RefreshStatus,
}

/// Everything that changes while the server runs, behind one mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    codes: HashMap<String, CodeRecord>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    pub(crate) users: Users,
    /// Faults for the next token calls, whatever their user.
    pub(crate) token_faults: VecDeque<TokenFault>,
    pub(crate) api_faults: VecDeque<ApiFault>,
    pub(crate) stats: Stats,
    /// The rate-limit budget shared by `/rest/` requests without a token the server knows.
    anonymous_budget: Budget,
    /// Every `/rest/` request, when recording is on.
    pub(crate) api_log: Vec<ApiRequest>,
}

impl State {
    /// A user's record, if the user exists.
    pub(crate) fn user_mut(&mut self, user: UserId) -> Option<&mut UserRecord> {
        self.users.get_mut(user)
    }

    /// The user a token-endpoint request is attributed to: the owner of the refresh token or
    /// authorization code it presents, known to the server (whatever its state). `None` for
    /// client-credentials grants and unknown credentials. One hash lookup.
    pub(crate) fn grant_user(&self, params: &Params) -> Option<UserId> {
        match GrantType::parse(params.get("grant_type")?)? {
            GrantType::RefreshToken => self.refresh.get(params.get("refresh_token")?)?.owner.user(),
            GrantType::AuthorizationCode => Some(self.codes.get(params.get("code")?)?.user),
            GrantType::ClientCredentials => None,
        }
    }

    /// The rate-limit budget of a request presenting `access_token`: the token's own if the
    /// server knows it (whatever its state), else the one shared by anonymous requests.
    pub(crate) fn budget_mut(&mut self, access_token: Option<&str>) -> &mut Budget {
        match access_token.and_then(|token| self.access.get_mut(token)) {
            Some(record) => &mut record.budget,
            None => &mut self.anonymous_budget,
        }
    }

    /// The user an access token acts for, if the server knows the token (whatever its state).
    pub(crate) fn access_user(&self, access_token: &str) -> Option<UserId> {
        self.access.get(access_token)?.owner.user()
    }

    /// Issues an authorization code, as if `user` approved the request.
    pub(crate) fn issue_code(
        &mut self,
        client_id: &str,
        redirect_uri: &str,
        user: UserId,
        now: i64,
    ) -> String {
        let code = token::opaque_secret();
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_id: client_id.to_owned(),
                user,
                redirect_uri: redirect_uri.to_owned(),
                expires_at: now.saturating_add(CODE_LIFETIME_SECS),
                used: false,
            },
        );
        code
    }

    /// Mints and stores a new access token, with a refresh token unless it is for the client
    /// itself. `now_millis` is the issue time in Unix milliseconds.
    pub(crate) fn mint(
        &mut self,
        config: &Config,
        client_id: &str,
        owner: Owner,
        now_millis: i64,
    ) -> Minted {
        let now = unix_secs(now_millis);
        let expires_in = config.access_token_lifetime_secs;
        // What the token claims (its JWT `exp`, and `created_at + expires_in`).
        let expires_at = now.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
        let access_token =
            token::access_token(owner.resource_owner_id(), client_id, now, expires_at);
        let refresh_token = owner.user().map(|_| token::opaque_secret());
        if let Some(refresh) = &refresh_token {
            self.refresh.insert(
                refresh.clone(),
                RefreshRecord {
                    client_id: client_id.to_owned(),
                    owner,
                    access_token: access_token.clone(),
                    status: RefreshStatus::Live,
                },
            );
        }
        self.access.insert(
            access_token.clone(),
            AccessRecord {
                client_id: client_id.to_owned(),
                owner,
                created_at: now,
                valid_until_millis: config.valid_until_millis(now_millis),
                refresh_token: refresh_token.clone(),
                revoked: false,
                expired: false,
                budget: Budget::default(),
            },
        );
        if let Some(record) = owner.user().and_then(|user| self.users.get_mut(user)) {
            record.access_tokens.push(access_token.clone());
        }
        Minted {
            access_token,
            refresh_token,
            expires_in,
            created_at: now,
            owner,
        }
    }

    /// Applies a token-endpoint request received at `now_millis` (Unix milliseconds).
    pub(crate) fn grant(
        &mut self,
        config: &Config,
        params: &Params,
        now_millis: i64,
    ) -> Result<Minted, GrantError> {
        let now = unix_secs(now_millis);
        let grant_type = params.get("grant_type").ok_or_else(|| {
            GrantError::InvalidRequest("the grant_type parameter is missing".to_owned())
        })?;
        let grant_type = GrantType::parse(grant_type).ok_or(GrantError::UnsupportedGrantType)?;
        let client_id = config.authenticate(params)?;
        let owner = match grant_type {
            GrantType::AuthorizationCode => self.redeem_code(params, client_id, now)?,
            GrantType::RefreshToken => self.consume_refresh_token(params, client_id)?,
            GrantType::ClientCredentials => Owner::ServiceAccount,
        };
        Ok(self.mint(config, client_id, owner, now_millis))
    }

    fn redeem_code(
        &mut self,
        params: &Params,
        client_id: &str,
        now: i64,
    ) -> Result<Owner, GrantError> {
        let code = params.get("code").ok_or_else(|| {
            GrantError::InvalidRequest("the code parameter is missing".to_owned())
        })?;
        let redirect_uri = params.get("redirect_uri").ok_or_else(|| {
            GrantError::InvalidRequest("the redirect_uri parameter is missing".to_owned())
        })?;
        let record = self.codes.get_mut(code).ok_or(GrantError::InvalidGrant(
            "the authorization code is unknown",
        ))?;
        if record.used {
            return Err(GrantError::InvalidGrant(
                "the authorization code was already used",
            ));
        }
        if record.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "the authorization code was issued to another client",
            ));
        }
        if record.redirect_uri != redirect_uri {
            return Err(GrantError::InvalidGrant(
                "the redirect_uri does not match the one of the authorization request",
            ));
        }
        if now >= record.expires_at {
            return Err(GrantError::InvalidGrant("the authorization code expired"));
        }
        record.used = true;
        Ok(Owner::User(record.user))
    }

    fn consume_refresh_token(
        &mut self,
        params: &Params,
        client_id: &str,
    ) -> Result<Owner, GrantError> {
        let presented = params.get("refresh_token").ok_or_else(|| {
            GrantError::InvalidRequest("the refresh_token parameter is missing".to_owned())
        })?;
        let record = self
            .refresh
            .get_mut(presented)
            .ok_or(GrantError::InvalidGrant("the refresh token is unknown"))?;
        match record.status {
            RefreshStatus::Live => {}
            RefreshStatus::Consumed => {
                return Err(GrantError::InvalidGrant(
                    "the refresh token was already used",
                ))
            }
            RefreshStatus::Revoked => {
                return Err(GrantError::InvalidGrant("the refresh token was revoked"))
            }
        }
        if record.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "the refresh token was issued to another client",
            ));
        }
        record.status = RefreshStatus::Consumed;
        let owner = record.owner;
        self.stats
            .consumed_refresh_tokens
            .push(presented.to_owned());
        if let Some(record) = owner.user().and_then(|user| self.users.get_mut(user)) {
            record.stats.consumed_refresh_tokens += 1;
        }
        Ok(owner)
    }

    /// Looks up a bearer token at `now_millis` (Unix milliseconds) on the emulator's clock.
    pub(crate) fn check_access(
        &self,
        access_token: &str,
        now_millis: i64,
    ) -> Result<LiveToken, TokenRejection> {
        let record = self
            .access
            .get(access_token)
            .ok_or(TokenRejection::Unknown)?;
        if record.revoked {
            return Err(TokenRejection::Revoked);
        }
        if record.expired || now_millis >= record.valid_until_millis {
            return Err(TokenRejection::Expired);
        }
        Ok(LiveToken {
            client_id: record.client_id.clone(),
            owner: record.owner,
            created_at: record.created_at,
            valid_until_millis: record.valid_until_millis,
        })
    }

    /// RFC 7009 revocation of an access or refresh token issued to `client_id`: revokes the
    /// access token and its refresh token. Unknown tokens and other clients' tokens are ignored.
    pub(crate) fn revoke(&mut self, token: &str, client_id: &str) {
        let access_token = match (self.access.get(token), self.refresh.get(token)) {
            (Some(access), _) if access.client_id == client_id => token.to_owned(),
            (_, Some(refresh)) if refresh.client_id == client_id => refresh.access_token.clone(),
            _ => return,
        };
        self.revoke_pair(&access_token);
    }

    /// Revokes a known access token and its refresh token.
    fn revoke_pair(&mut self, access_token: &str) {
        let Some(access) = self.access.get_mut(access_token) else {
            return;
        };
        access.revoked = true;
        let refresh_token = access.refresh_token.clone();
        if let Some(refresh) = refresh_token.and_then(|t| self.refresh.get_mut(&t)) {
            if refresh.status == RefreshStatus::Live {
                refresh.status = RefreshStatus::Revoked;
            }
        }
    }

    /// Every access token issued so far is expired from now on.
    pub(crate) fn expire_all(&mut self) {
        for access in self.access.values_mut() {
            access.expired = true;
        }
    }

    /// Every access token issued so far to `user` is expired from now on: O(the user's
    /// tokens).
    pub(crate) fn expire_user(&mut self, user: UserId) {
        let Some(record) = self.users.get(user) else {
            return;
        };
        for token in &record.access_tokens {
            if let Some(access) = self.access.get_mut(token) {
                access.expired = true;
            }
        }
    }

    /// Every access and refresh token issued so far to `user` is revoked.
    pub(crate) fn revoke_user(&mut self, user: UserId) {
        let tokens = match self.users.get_mut(user) {
            // Revoked tokens stay revoked: no need to visit them again.
            Some(record) => std::mem::take(&mut record.access_tokens),
            None => return,
        };
        for token in &tokens {
            self.revoke_pair(token);
        }
    }

    /// Every access and refresh token issued so far is revoked.
    pub(crate) fn revoke_all(&mut self) {
        for access in self.access.values_mut() {
            access.revoked = true;
        }
        for refresh in self.refresh.values_mut() {
            if refresh.status == RefreshStatus::Live {
                refresh.status = RefreshStatus::Revoked;
            }
        }
    }
}

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    state: Mutex<State>,
    shutdown: watch::Receiver<bool>,
    /// `http://localhost:PORT`, where file downloads are redirected.
    pub(crate) alternate_host_url: String,
    /// When the server started, Unix milliseconds on the emulator's clock.
    pub(crate) started_at_millis: i64,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        shutdown: watch::Receiver<bool>,
        alternate_host_url: String,
    ) -> Self {
        let started_at_millis = config.now_millis();
        Self {
            config,
            state: Mutex::new(State::default()),
            shutdown,
            alternate_host_url,
            started_at_millis,
        }
    }

    /// Locks the state. Never held across an `.await`; a panic while holding it leaves the
    /// counters usable, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The emulator's clock, in whole Unix seconds (floored).
    pub(crate) fn now(&self) -> i64 {
        self.config.now()
    }

    /// The emulator's clock, in Unix milliseconds.
    pub(crate) fn now_millis(&self) -> i64 {
        self.config.now_millis()
    }

    /// Waits for the latency configured for `route`, if any.
    pub(crate) async fn delay(&self, route: Route) {
        if let Some(latency) = self.config.latency.get(&route) {
            tokio::time::sleep(*latency).await;
        }
    }

    /// Resolves when the emulator shuts down.
    pub(crate) async fn until_shutdown(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the sender is gone: shut down as well.
        let _ = shutdown.wait_for(|down| *down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            client_id: "id".to_owned(),
            client_secret: "secret".to_owned(),
            clients: HashMap::from([
                ("id".to_owned(), "secret".to_owned()),
                ("other".to_owned(), "s2".to_owned()),
            ]),
            redirect_uris: HashSet::from(["http://localhost".to_owned()]),
            access_token_lifetime_secs: 5400,
            clock_offset_secs: 0,
            latency: HashMap::new(),
            forbidden_company: None,
            floor_issue_times: false,
            expire_early_millis: 0,
            limits: Limits::default(),
            record_api_log: false,
        }
    }

    fn params(text: &str) -> Params {
        Params::from_urlencoded(text.as_bytes()).unwrap()
    }

    #[test]
    fn refresh_tokens_rotate_and_die_after_one_use() {
        let config = config();
        let mut state = State::default();
        let first = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_000);
        let old = first.refresh_token.clone().unwrap();
        let refresh = format!(
            "grant_type=refresh_token&client_id=id&client_secret=secret&refresh_token={old}"
        );
        let second = state.grant(&config, &params(&refresh), 1_001_000).unwrap();
        assert_ne!(second.refresh_token.as_deref(), Some(old.as_str()));
        assert_eq!(
            state.grant(&config, &params(&refresh), 1_002_000),
            Err(GrantError::InvalidGrant(
                "the refresh token was already used"
            ))
        );
        assert_eq!(state.stats.consumed_refresh_tokens, vec![old]);
    }

    #[test]
    fn another_clients_refresh_token_is_invalid_grant_and_stays_live() {
        let config = config();
        let mut state = State::default();
        let grant = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_000);
        let token = grant.refresh_token.unwrap();
        let as_other = format!(
            "grant_type=refresh_token&client_id=other&client_secret=s2&refresh_token={token}"
        );
        assert!(matches!(
            state.grant(&config, &params(&as_other), 1_001_000),
            Err(GrantError::InvalidGrant(_))
        ));
        let as_owner = format!(
            "grant_type=refresh_token&client_id=id&client_secret=secret&refresh_token={token}"
        );
        assert!(state.grant(&config, &params(&as_owner), 1_001_000).is_ok());
    }

    #[test]
    fn expiry_is_judged_on_the_given_clock() {
        let config = config();
        let mut state = State::default();
        let grant = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_000);
        assert_eq!(grant.created_at, 1000);
        assert!(state.check_access(&grant.access_token, 6_399_999).is_ok());
        assert_eq!(
            state
                .check_access(&grant.access_token, 6_400_000)
                .unwrap_err(),
            TokenRejection::Expired
        );
        assert_eq!(
            state.check_access("nope", 1_000_000).unwrap_err(),
            TokenRejection::Unknown
        );
    }

    #[test]
    fn codes_expire_after_ten_minutes() {
        let config = config();
        let mut state = State::default();
        let code = state.issue_code("id", "http://localhost", UserId::DEFAULT, 1000);
        let exchange = format!(
            "grant_type=authorization_code&client_id=id&client_secret=secret&code={code}&redirect_uri=http%3A%2F%2Flocalhost"
        );
        assert_eq!(
            state.grant(&config, &params(&exchange), 1_600_000),
            Err(GrantError::InvalidGrant("the authorization code expired"))
        );
    }

    #[test]
    fn revoking_a_refresh_token_revokes_its_access_token() {
        let config = config();
        let mut state = State::default();
        let grant = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_000);
        state.revoke(grant.refresh_token.as_deref().unwrap(), "other");
        assert!(
            state.check_access(&grant.access_token, 1_001_000).is_ok(),
            "another client cannot revoke"
        );
        state.revoke(grant.refresh_token.as_deref().unwrap(), "id");
        assert_eq!(
            state
                .check_access(&grant.access_token, 1_001_000)
                .unwrap_err(),
            TokenRejection::Revoked
        );
    }

    #[test]
    fn tokens_expire_on_the_exact_issue_time_by_default() {
        let config = config();
        let mut state = State::default();
        let grant = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_700);
        assert_eq!(grant.created_at, 1000);
        assert_eq!(grant.expires_in, 5400);
        assert!(state.check_access(&grant.access_token, 6_400_699).is_ok());
        assert_eq!(
            state
                .check_access(&grant.access_token, 6_400_700)
                .unwrap_err(),
            TokenRejection::Expired
        );
    }

    #[test]
    fn floored_issue_times_expire_up_to_a_second_early() {
        let config = Config {
            floor_issue_times: true,
            ..config()
        };
        let mut state = State::default();
        let grant = state.mint(&config, "id", Owner::User(UserId::DEFAULT), 1_000_700);
        assert_eq!((grant.created_at, grant.expires_in), (1000, 5400));
        assert!(state.check_access(&grant.access_token, 6_399_999).is_ok());
        assert_eq!(
            state
                .check_access(&grant.access_token, 6_400_000)
                .unwrap_err(),
            TokenRejection::Expired
        );
        // Before the epoch, flooring still goes down.
        assert_eq!(config.valid_until_millis(-300), -1000 + 5_400_000);
    }

    #[test]
    fn early_expiry_comes_off_the_claimed_lifetime_and_saturates() {
        let early = Config {
            expire_early_millis: 1500,
            ..config()
        };
        let mut state = State::default();
        let grant = state.mint(&early, "id", Owner::User(UserId::DEFAULT), 1_000_000);
        assert_eq!((grant.created_at, grant.expires_in), (1000, 5400));
        assert!(state.check_access(&grant.access_token, 6_398_499).is_ok());
        assert_eq!(
            state
                .check_access(&grant.access_token, 6_398_500)
                .unwrap_err(),
            TokenRejection::Expired
        );
        let both = Config {
            floor_issue_times: true,
            ..early
        };
        assert_eq!(both.valid_until_millis(1_000_999), 6_398_500);
        let longer_than_lifetime = Config {
            expire_early_millis: i64::MAX,
            ..config()
        };
        // Dead on arrival, without overflow.
        assert!(longer_than_lifetime.valid_until_millis(1_000_000) < 1_000_000);
        assert!(longer_than_lifetime.valid_until_millis(i64::MIN) == i64::MIN);
    }
}
