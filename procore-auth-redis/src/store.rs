//! [`RedisStore`]: tokens in Redis, one key per tenant, saved by compare-and-swap.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use procore_auth_core::{BoxFuture, KeyedTokenStore, RefreshTurn, StoreError, Token, TokenStore};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisError};

use crate::events::{escape_glob, Events};
use crate::lease;
use crate::scripts::SAVE;
use crate::Error;

/// The key prefix unless told otherwise.
pub const DEFAULT_PREFIX: &str = "procore-auth:";
/// How long a refresh lease lives unless extended (default): a holder that dies is
/// taken over this long after its last extension.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// The longest lease accepted: a day (a holder that dies is waited for that long).
const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a process waits for a peer's refresh before its own refresh fails
/// (transiently) with [`StoreError::Busy`] (default). Longer than a token call's
/// timeout, so a live holder finishes first.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(45);
/// How often a waiting process asks again when no notification came (default).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long Redis answers may take before the operation fails (default).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the refresh tokens of replaced pairs are remembered after the last
/// replacement (a day: far longer than a process holds on to a pair it still uses)…
const REPLACED_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);
/// …and how many of them, newest first (a process that fell further behind is
/// caught by the issue times, a second apart at least, or by `invalid_grant`).
const REPLACED_KEPT: u32 = 32;

/// Procore tokens in Redis: what makes a fleet of processes sharing one Procore user
/// (or a registry of them) behave like one process.
///
/// - **Keys.** Tenant `k` lives at `<prefix>{k}` (its `Display` form in a Redis
///   Cluster hash tag, so its lease shares its slot): the token as JSON, beside
///   `<prefix>{k}:lease`, `<prefix>{k}:refused` and `<prefix>{k}:replaced`, and
///   events on the channel `<prefix>{k}:events`. The JSON holds the tokens
///   themselves: protect Redis as you would the secrets (ACLs, TLS, a private
///   network).
/// - **Compare-and-swap.** Saves run a Lua script that writes only if the stored pair
///   is still the one expected ([`TokenStore::save`]'s contract), so a process that
///   lost a race, or whose lease ran out, never overwrites a newer pair.
/// - **Cross-process single flight.** Before presenting a refresh token a process takes
///   the key's lease (`SET … NX PX`), extended while its refresh runs and released by
///   a compare-and-delete script. Processes that need a token meanwhile wait for the
///   new pair (a pub/sub notification, with polling as the fallback) and adopt it. A
///   holder that dies is taken over once its lease expires; the taker re-reads the
///   store first. A process that still holds a pair a peer replaced is told to
///   adopt the stored pair instead of presenting its (burnt) refresh token, even
///   when both pairs were issued in the same second: each save remembers the
///   refresh token it replaced (as its SHA-1). A refresh token that Procore refused
///   is remembered too, so no peer presents it again.
/// - **Redis unreachable.** Requests keep using a still-valid token (reading it needs
///   no Redis). A refresh fails with a transient [`StoreError::Io`] rather than
///   present a refresh token without the lease, and succeeds again once Redis is back.
///   One window remains: if Redis becomes unreachable after Procore rotated the pair
///   and stays so through the manager's save retries (about 2 s), the new pair lives
///   only in the refreshing process's memory (it keeps working); a peer that refreshes
///   meanwhile presents the old refresh token and gets `invalid_grant`.
///
/// # Durability
///
/// A rotated refresh token is the only live one: if Redis loses it, the user must sign
/// in again. Run Redis with the append-only file on, fsynced at least every second
/// (`appendonly yes`, `appendfsync everysec`, or `always` to lose nothing), and with
/// `maxmemory-policy noeviction` (or keep these keys out of eviction's reach).
///
/// ```no_run
/// use procore_auth_core::{RefreshTokenGrant, TokenManager, TokenRegistry};
/// use procore_auth_redis::RedisStore;
///
/// # async fn run(grant: RefreshTokenGrant, grant2: RefreshTokenGrant) -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisStore::connect("redis://127.0.0.1:6379/").await?;
///
/// // One Procore user shared by every replica:
/// let manager = TokenManager::builder(grant).store(redis.for_key("company-7/user-42")).build();
///
/// // Or many, one key per tenant:
/// let registry: TokenRegistry<u64> = TokenRegistry::builder(grant2).store(redis.clone()).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) connection: ConnectionManager,
    pub(crate) prefix: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) max_wait: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) events: Arc<Events>,
}

/// Configures a [`RedisStore`]. Made by [`RedisStore::builder`].
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    lease_ttl: Duration,
    max_wait: Duration,
    poll_interval: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_wait", &self.max_wait)
            .field("poll_interval", &self.poll_interval)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// Puts keys under `prefix` (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Lets a refresh lease live this long between extensions (default
    /// [`DEFAULT_LEASE_TTL`]; 100 ms to a day): a dead holder is taken over after it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.clamp(Duration::from_millis(100), MAX_LEASE_TTL);
        self
    }

    /// Waits at most this long for a peer's refresh (default [`DEFAULT_MAX_WAIT`]).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Asks again this often while waiting without a notification (default
    /// [`DEFAULT_POLL_INTERVAL`]; at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Fails a Redis operation whose answer takes longer (default
    /// [`DEFAULT_RESPONSE_TIMEOUT`]).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Connects (and reconnects by itself whenever the connection drops).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the URL is invalid or Redis cannot be reached now;
    /// [`Error::InvalidPrefix`] if the prefix holds `{` or `}`.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::InvalidPrefix);
        }
        let client = Client::open(self.url.as_str()).map_err(Error::Connect)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.response_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(Error::Connect)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                connection,
                prefix: self.prefix,
                lease_ttl: self.lease_ttl,
                max_wait: self.max_wait,
                poll_interval: self.poll_interval,
                response_timeout: self.response_timeout,
                events: Arc::default(),
            }),
        })
    }
}

impl RedisStore {
    /// Starts configuring a store on the Redis at `url` (`redis://[user:password@]host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_wait: DEFAULT_MAX_WAIT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// Connects to the Redis at `url` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// The store of one tenant, for a single [`TokenManager`](procore_auth_core::TokenManager).
    pub fn for_key(&self, key: impl fmt::Display) -> RedisKeyStore {
        RedisKeyStore {
            store: self.clone(),
            key: key.to_string(),
        }
    }

    /// The pattern every tenant's events channel matches.
    pub(crate) fn events_pattern(&self) -> String {
        format!("{}*:events", escape_glob(&self.inner.prefix))
    }

    /// The Redis keys of tenant `key`.
    pub(crate) fn keys(&self, key: &dyn fmt::Display) -> Keys {
        let token = format!("{}{{{}}}", self.inner.prefix, hash_tag(&key.to_string()));
        Keys {
            lease: format!("{token}:lease"),
            refused: format!("{token}:refused"),
            replaced: format!("{token}:replaced"),
            events: format!("{token}:events"),
            token,
        }
    }

    async fn load_key(&self, keys: Keys) -> Result<Option<Token>, StoreError> {
        let mut connection = self.inner.connection.clone();
        let json: Option<String> = connection.get(&keys.token).await.map_err(io_error)?;
        json.map(|json| parse(&json)).transpose()
    }

    async fn save_key(
        &self,
        keys: Keys,
        token: &Token,
        expected: Option<&Token>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(token).map_err(|_| StoreError::Corrupt {
            reason: "the token could not be serialized".to_owned(),
        })?;
        let secret = |secret: Option<&str>| secret.unwrap_or_default().to_owned();
        let (access, refresh) = match expected {
            Some(expected) => (
                secret(expected.access_token().map(|access| access.secret())),
                secret(expected.refresh_token().map(|refresh| refresh.secret())),
            ),
            None => (String::new(), String::new()),
        };
        let new_secret = |token: &Token| {
            (
                secret(token.access_token().map(|access| access.secret())),
                secret(token.refresh_token().map(|refresh| refresh.secret())),
            )
        };
        let (new_access, new_refresh) = new_secret(token);
        let mut save = SAVE.prepare_invoke();
        save.key(&keys.token)
            .key(&keys.replaced)
            .arg(json)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(access)
            .arg(refresh)
            .arg(&keys.events)
            .arg(new_access)
            .arg(new_refresh)
            .arg(lease::millis(REPLACED_MEMORY))
            .arg(REPLACED_KEPT);
        let mut connection = self.inner.connection.clone();
        // After a Redis restart the first command on the old connection fails while
        // the manager reconnects: a rotated pair is worth one more try (the script is
        // idempotent, so a save whose reply was lost succeeds again).
        let saved: i64 = match save.invoke_async(&mut connection).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                tracing::debug!(%error, "retrying a procore token save after a redis connection error");
                save.invoke_async(&mut connection).await
            }
            saved => saved,
        }
        .map_err(io_error)?;
        if saved == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn clear_key(&self, keys: Keys) -> Result<(), StoreError> {
        let mut connection = self.inner.connection.clone();
        let _: i64 = connection
            .del(&[&keys.token, &keys.refused, &keys.replaced])
            .await
            .map_err(io_error)?;
        Ok(())
    }
}

/// `key` as the content of a Redis Cluster hash tag: never empty, and without `{`
/// or `}` (which would end the tag early, or make it empty, and split one tenant's
/// keys over slots). `%`, `{` and `}` become `%25`, `%7B` and `%7D`; the empty key is
/// `%`: distinct keys stay distinct.
fn hash_tag(key: &str) -> String {
    if key.is_empty() {
        return "%".to_owned();
    }
    let mut tag = String::with_capacity(key.len());
    for character in key.chars() {
        match character {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            other => tag.push(other),
        }
    }
    tag
}

/// The Redis names of one tenant's data.
pub(crate) struct Keys {
    pub(crate) token: String,
    pub(crate) lease: String,
    pub(crate) refused: String,
    /// The SHA-1s of refresh tokens whose pair a save replaced, newest first.
    pub(crate) replaced: String,
    pub(crate) events: String,
}

/// A Redis failure as a store error: transient I/O (the server is unreachable or slow).
pub(crate) fn io_error(error: RedisError) -> StoreError {
    std::io::Error::other(error).into()
}

/// Parses stored JSON; an error says where, never what (the value holds tokens).
fn parse(json: &str) -> Result<Token, StoreError> {
    serde_json::from_str(json).map_err(|error| StoreError::Corrupt {
        reason: format!(
            "the stored token is not valid ({:?} error at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        ),
    })
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("lease_ttl", &self.inner.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Display + Send + Sync> KeyedTokenStore<K> for RedisStore {
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        Box::pin(self.load_key(self.keys(key)))
    }

    fn save<'a>(
        &'a self,
        key: &'a K,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.save_key(self.keys(key), token, expected))
    }

    fn clear<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.clear_key(self.keys(key)))
    }

    fn begin_refresh<'a>(
        &'a self,
        key: &'a K,
        presenting: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        Box::pin(lease::begin_refresh(self, self.keys(key), presenting))
    }
}

/// One tenant's tokens in a [`RedisStore`]: a [`TokenStore`] for a single
/// [`TokenManager`](procore_auth_core::TokenManager). Made by [`RedisStore::for_key`].
#[derive(Clone, Debug)]
pub struct RedisKeyStore {
    store: RedisStore,
    key: String,
}

impl TokenStore for RedisKeyStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        KeyedTokenStore::load(&self.store, &self.key)
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        KeyedTokenStore::save(&self.store, &self.key, token, expected)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        KeyedTokenStore::clear(&self.store, &self.key)
    }

    fn begin_refresh<'a>(
        &'a self,
        presenting: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        KeyedTokenStore::begin_refresh(&self.store, &self.key, presenting)
    }
}
