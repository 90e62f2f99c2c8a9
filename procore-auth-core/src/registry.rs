//! [`TokenRegistry`]: one [`TokenManager`] per tenant, loaded lazily from a keyed
//! store, with a bounded number resident in memory.

use std::any::Any;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Extensions, HeaderMap};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter};

use crate::manager::default_request_policy;
use crate::request::SelectTenant;
use crate::store::TenantStore;
use crate::{
    Bearer, Error, KeyedMemoryStore, KeyedTokenStore, Metrics, RequestPolicy, Token, TokenManager,
    TokenManagerBuilder, TokenSource, Tokens,
};

/// How many tenants a registry keeps in memory unless told otherwise.
pub const DEFAULT_MAX_RESIDENT: usize = 10_000;

/// The tenant a manager of a [`TokenRegistry`] belongs to, as errors and logs carry
/// it: its key's `Display` form, and the key itself.
///
/// ```
/// # use procore_auth_core::{Error, Tenant};
/// fn ask_to_sign_in_again(error: &Error) -> Option<u64> {
///     // The registry's key type here is `u64` (a Procore user id, say).
///     error.tenant().and_then(|tenant| tenant.key::<u64>()).copied()
/// }
/// ```
#[derive(Clone)]
pub struct Tenant {
    key: Arc<dyn TenantKey>,
}

/// What a tenant key offers once its type is erased.
trait TenantKey: Any + fmt::Display + Send + Sync {}

impl<K: Any + fmt::Display + Send + Sync> TenantKey for K {}

impl Tenant {
    fn new<K: Any + fmt::Display + Send + Sync>(key: K) -> Self {
        Self { key: Arc::new(key) }
    }

    /// The key, if it is a `K` (the registry's key type).
    pub fn key<K: Any>(&self) -> Option<&K> {
        let key: &dyn Any = &*self.key;
        key.downcast_ref()
    }
}

/// The key's `Display` form with control characters escaped: keys reach logs and
/// error messages, where a newline or an escape sequence could forge lines.
impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.key.to_string();
        if !name.chars().any(char::is_control) {
            return f.write_str(&name);
        }
        for character in name.chars() {
            if character.is_control() {
                write!(f, "{}", character.escape_debug())?;
            } else {
                f.write_fmt(format_args!("{character}"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tenant")
            .field(&format_args!("{self}"))
            .finish()
    }
}

/// One [`TokenManager`] per tenant (a user who authorized the app, a company
/// installation): what a service acting for many Procore users holds, so one client
/// serves them all.
///
/// - The first request for a key builds its manager, which loads the key's token from
///   the [`KeyedTokenStore`] and saves every new token there before using it.
/// - Each tenant has its own single-flight refresh, back-off and reauthorization
///   state: no tenant ever waits for, or fails because of, another's.
/// - At most about [`max_resident`](TokenRegistryBuilder::max_resident) managers stay
///   in memory; idle ones are evicted first. A manager in use (a refresh not finished,
///   a request or a caller holding it) is never evicted, so two managers never refresh
///   one tenant at once. Evicting loses nothing: the store holds the newest pair, and
///   the next request reloads it.
/// - Errors that ask for a new sign-in name the tenant
///   ([`Error::tenant`]); so do the managers' logs (a `procore_tenant` span).
///
/// Keys are not secrets: they are shown in logs and errors through `Display`. Stores
/// that persist tokens by name ([`KeyedFileStore`](crate::KeyedFileStore), Redis) tell
/// tenants apart by that `Display` form: make it show everything that distinguishes
/// one tenant from another.
///
/// Limits worth knowing:
/// - the bound is enforced as tenants are loaded: after a burst, idle managers above
///   it stay until the next new tenant arrives;
/// - a manager whose refresh nobody drives stays (it may be about to save a rotated
///   token): with the default [`AmbientTokio`](crate::AmbientTokio) spawner every
///   refresh runs to its end, with [`WaitersOnly`](crate::WaitersOnly) one whose
///   waiters all went away pins its manager;
/// - a tenant that must sign in again is evicted like any other: reloaded, its stored
///   (refused) refresh token is presented once more, and refused again.
///
/// Residency is a [`quick_cache`] cache rather than a home-made LRU: it is
/// concurrent (sharded, reads take a shared lock), costs a few words per entry, has no
/// background thread, and lets the registry pin the managers in use, so eviction
/// never needs a lock of ours.
///
/// ```
/// use procore_auth_core::{KeyedMemoryStore, TokenRegistry, Tokens};
/// # use procore_auth_core::{AccessToken, BoxFuture, Clock, Error, Token, TokenSource};
/// # #[derive(Debug)] struct Minting;
/// # impl TokenSource for Minting {
/// #     fn fetch<'a>(&'a self, _: Option<&'a Token>, clock: &'a dyn Clock) -> BoxFuture<'a, Result<Token, Error>> {
/// #         Box::pin(async move { let now = clock.now(); Token::new(AccessToken::new("minted"), None, now, Some(now + std::time::Duration::from_secs(5400))) })
/// #     }
/// #     fn revoke<'a>(&'a self, _: &'a Token) -> BoxFuture<'a, Result<(), Error>> { Box::pin(async { Ok(()) }) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// # let (token_of_ann, token_of_bob) = (Minting.fetch(None, &procore_auth_core::SystemClock).await?, Minting.fetch(None, &procore_auth_core::SystemClock).await?);
/// // `Minting` stands in for a `RefreshTokenGrant`, shared by every tenant.
/// let registry: TokenRegistry<String> = TokenRegistry::builder(Minting)
///     .store(KeyedMemoryStore::new())
///     .max_resident(1_000)
///     .build();
///
/// // After each user's OAuth callback:
/// registry.insert("ann".to_owned(), token_of_ann).await?;
/// registry.insert("bob".to_owned(), token_of_bob).await?;
///
/// // Adapters take the registry (the tenant's key goes in each request's
/// // extensions) or `registry.keyed_by(...)` (a function finds it):
/// let tokens = Tokens::from(registry.clone());
/// # let _ = tokens;
/// let bearer = registry.manager(&"ann".to_owned()).bearer().await?;
/// # let _ = bearer;
/// registry.remove(&"bob".to_owned()).await?; // uninstalled: revoked and forgotten
/// # Ok(()) }
/// ```
pub struct TokenRegistry<K> {
    inner: Arc<Registry<K>>,
}

impl<K> Clone for TokenRegistry<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

type Configure<K> = dyn Fn(&K, TokenManagerBuilder) -> TokenManagerBuilder + Send + Sync;

struct Registry<K> {
    managers: Cache<K, TokenManager, UnitWeighter, DefaultHashBuilder, Residency>,
    store: Arc<dyn KeyedTokenStore<K>>,
    source: Arc<dyn TokenSource>,
    policy: Arc<RequestPolicy>,
    configure: Option<Box<Configure<K>>>,
    max_resident: usize,
    loaded: AtomicU64,
    evicted: Arc<AtomicU64>,
}

/// Pins the managers in use, and counts evictions.
#[derive(Clone)]
struct Residency {
    evicted: Arc<AtomicU64>,
}

impl<K> Lifecycle<K, TokenManager> for Residency {
    /// Evicted managers, dropped once the cache's lock is released.
    type RequestState = Vec<TokenManager>;

    #[inline]
    fn is_pinned(&self, _: &K, manager: &TokenManager) -> bool {
        manager.in_use()
    }

    fn on_evict(&self, evicted: &mut Self::RequestState, _: K, manager: TokenManager) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
        evicted.push(manager);
    }
}

/// Counters of a [`TokenRegistry`]. Each tenant's own are its manager's
/// [`metrics`](TokenManager::metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryMetrics {
    /// Managers in memory now.
    pub resident: usize,
    /// Managers built (a tenant's first request, or its first after an eviction).
    pub loaded: u64,
    /// Managers evicted to stay within the bound.
    pub evicted: u64,
}

/// Configures a [`TokenRegistry`]. Made by [`TokenRegistry::builder`].
pub struct TokenRegistryBuilder<K> {
    source: Arc<dyn TokenSource>,
    store: Option<Arc<dyn KeyedTokenStore<K>>>,
    policy: Option<RequestPolicy>,
    configure: Option<Box<Configure<K>>>,
    max_resident: usize,
}

impl<K> TokenRegistryBuilder<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Keeps the tenants' tokens in `store` (default: a [`KeyedMemoryStore`], lost on
    /// exit).
    pub fn store(mut self, store: impl KeyedTokenStore<K> + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Keeps about this many tenants' managers in memory (default
    /// [`DEFAULT_MAX_RESIDENT`]; at least 1), plus those in use. About: the cache
    /// spreads tenants over shards that fill unevenly, so evictions may begin a few
    /// percent before `tenants` are resident; allow headroom.
    pub fn max_resident(mut self, tenants: usize) -> Self {
        self.max_resident = tenants.max(1);
        self
    }

    /// Which requests get a token, for every tenant (default: [`RequestPolicy::new`]
    /// for the source's environment).
    pub fn request_policy(mut self, policy: RequestPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Configures each tenant's manager (clock, skew, back-off, spawner, rate-limit
    /// policy) as it is built. The registry sets the store after this. A request
    /// policy set here (a tenant's own default `Procore-Company-Id`, say) applies to
    /// that tenant's requests; which requests get a token at all is the registry's
    /// policy's decision.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use procore_auth_core::{TokenRegistry, TokenSource};
    /// # fn build(grant: impl TokenSource + 'static) -> TokenRegistry<u64> {
    /// TokenRegistry::builder(grant)
    ///     .configure(|_user: &u64, manager| manager.refresh_skew(Duration::from_secs(600)))
    ///     .build()
    /// # }
    /// ```
    pub fn configure(
        mut self,
        configure: impl Fn(&K, TokenManagerBuilder) -> TokenManagerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    /// Builds the registry.
    pub fn build(self) -> TokenRegistry<K> {
        let evicted = Arc::new(AtomicU64::new(0));
        let options = OptionsBuilder::new()
            .estimated_items_capacity(self.max_resident)
            .weight_capacity(self.max_resident as u64)
            .build()
            .expect("invariant: a positive capacity is a valid cache configuration");
        let managers = Cache::with_options(
            options,
            UnitWeighter,
            DefaultHashBuilder::default(),
            Residency {
                evicted: Arc::clone(&evicted),
            },
        );
        let policy = self
            .policy
            .unwrap_or_else(|| default_request_policy(&*self.source));
        TokenRegistry {
            inner: Arc::new(Registry {
                managers,
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(KeyedMemoryStore::<K>::new())),
                source: self.source,
                policy: Arc::new(policy),
                configure: self.configure,
                max_resident: self.max_resident,
                loaded: AtomicU64::new(0),
                evicted,
            }),
        }
    }
}

impl<K> TokenRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Starts configuring a registry whose tenants get new tokens from `source`
    /// (shared: a [`RefreshTokenGrant`](crate::RefreshTokenGrant) refreshes whichever
    /// tenant's token it is given).
    pub fn builder(source: impl TokenSource + 'static) -> TokenRegistryBuilder<K> {
        TokenRegistryBuilder {
            source: Arc::new(source),
            store: None,
            policy: None,
            configure: None,
            max_resident: DEFAULT_MAX_RESIDENT,
        }
    }

    /// The manager of `key`'s tenant, built (and its token loaded from the store on
    /// first use) if it is not resident. A caller holding it keeps it resident.
    pub fn manager(&self, key: &K) -> TokenManager {
        let registry = &self.inner;
        let built = registry.managers.get_or_insert_with(key, || {
            Ok::<_, std::convert::Infallible>(registry.build(key))
        });
        match built {
            Ok(manager) => manager,
            Err(never) => match never {},
        }
    }

    /// Sets `key`'s token (after the tenant's OAuth callback, say): saved to the store,
    /// then used. As [`TokenManager::set_token`].
    ///
    /// # Errors
    ///
    /// As [`TokenManager::set_token`].
    pub async fn insert(&self, key: K, token: Token) -> Result<Bearer, Error> {
        self.manager(&key).set_token(token).await
    }

    /// Removes `key`'s tenant (the app was uninstalled, the user left): revokes its
    /// token at Procore, deletes it from the store and drops its manager. Requests
    /// still in flight for it fail with [`Error::ReauthorizationRequired`].
    ///
    /// # Errors
    ///
    /// As [`TokenManager::revoke`]; the tenant stays if its token could not be
    /// revoked.
    pub async fn remove(&self, key: &K) -> Result<(), Error> {
        self.manager(key).revoke().await?;
        // A manager someone still holds stays resident (revoked, until a new token is
        // set): dropping it would let a later `insert` build a second manager for the
        // tenant beside it, and two managers would refresh one tenant.
        self.inner
            .managers
            .remove_if(key, |manager| !manager.in_use());
        Ok(())
    }

    /// The counters of `key`'s manager, if it is resident.
    pub fn tenant_metrics(&self, key: &K) -> Option<Metrics> {
        self.inner
            .managers
            .peek(key)
            .map(|manager| manager.metrics())
    }

    /// The registry's counters.
    pub fn metrics(&self) -> RegistryMetrics {
        RegistryMetrics {
            resident: self.inner.managers.len(),
            loaded: self.inner.loaded.load(Ordering::Relaxed),
            evicted: self.inner.evicted.load(Ordering::Relaxed),
        }
    }

    /// Which requests get a token.
    pub fn policy(&self) -> &RequestPolicy {
        &self.inner.policy
    }

    /// For adapters: each request's tenant is `key_of(headers, extensions)`; a
    /// request for the API for which it gives `None` fails with
    /// [`Error::TenantNotSelected`]. (`Tokens::from(registry)` reads a `K` from the
    /// request's extensions instead.)
    ///
    /// ```
    /// # use procore_auth_core::{TokenRegistry, Tokens};
    /// # fn wire(registry: TokenRegistry<u64>) -> Tokens {
    /// // One tenant per company installation, named by the request's company header.
    /// registry.keyed_by(|headers, _extensions| {
    ///     headers.get("procore-company-id")?.to_str().ok()?.parse().ok()
    /// })
    /// # }
    /// ```
    pub fn keyed_by(
        &self,
        key_of: impl Fn(&HeaderMap, &Extensions) -> Option<K> + Send + Sync + 'static,
    ) -> Tokens {
        Tokens::selecting(Arc::new(Selection {
            registry: self.clone(),
            key_of: KeyOf::Function(Box::new(key_of)),
        }))
    }
}

impl<K> Registry<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    fn build(&self, key: &K) -> TokenManager {
        self.loaded.fetch_add(1, Ordering::Relaxed);
        let builder = TokenManager::builder_shared(Arc::clone(&self.source));
        let builder = match &self.configure {
            Some(configure) => configure(key, builder),
            None => builder,
        };
        let store = Arc::new(TenantStore {
            store: Arc::clone(&self.store),
            key: key.clone(),
        });
        builder
            .for_tenant(Tenant::new(key.clone()), store, Arc::clone(&self.policy))
            .build()
    }
}

impl<K> From<TokenRegistry<K>> for Tokens
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Each request's tenant is the `K` in its extensions (`http::Extensions` for
    /// tower; reqwest-middleware's for reqwest).
    fn from(registry: TokenRegistry<K>) -> Self {
        Tokens::selecting(Arc::new(Selection {
            registry,
            key_of: KeyOf::Extension,
        }))
    }
}

type KeyFunction<K> = dyn Fn(&HeaderMap, &Extensions) -> Option<K> + Send + Sync;

enum KeyOf<K> {
    Extension,
    Function(Box<KeyFunction<K>>),
}

struct Selection<K> {
    registry: TokenRegistry<K>,
    key_of: KeyOf<K>,
}

impl<K> SelectTenant for Selection<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    fn policy(&self) -> &RequestPolicy {
        self.registry.policy()
    }

    #[inline]
    fn manager(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<TokenManager> {
        match &self.key_of {
            KeyOf::Extension => extensions.get::<K>().map(|key| self.registry.manager(key)),
            KeyOf::Function(key_of) => {
                key_of(headers, extensions).map(|key| self.registry.manager(&key))
            }
        }
    }
}

impl<K: Hash + Eq> fmt::Debug for Selection<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key_of = match self.key_of {
            KeyOf::Extension => "the request's extensions",
            KeyOf::Function(_) => "a function",
        };
        f.debug_struct("Selection")
            .field("registry", &self.registry)
            .field("key_of", &key_of)
            .finish()
    }
}

impl<K: Hash + Eq> fmt::Debug for TokenRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRegistry")
            .field("resident", &self.inner.managers.len())
            .field("max_resident", &self.inner.max_resident)
            .field("store", &self.inner.store)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl<K> fmt::Debug for TokenRegistryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRegistryBuilder")
            .field("source", &self.source)
            .field("store", &self.store)
            .field("max_resident", &self.max_resident)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
