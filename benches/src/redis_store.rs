//! What keeping tokens in Redis ([`RedisStore`], issue 13) adds, on a private
//! `redis-server` ([`RedisServer`]) over loopback TCP, against the in-process stores:
//!
//! - **a forced refresh**: the emulator expires the token, then a herd of waiters
//!   report the 401 at once ([`Setup::rejected_herd`]) or send requests through an
//!   adapter ([`Setup::herd`]); one refresh serves them all. With
//!   [`RedisStore::for_key`] the refresh also takes the key's lease and saves by
//!   compare-and-swap in Redis (cross-process single flight); with [`MemoryStore`] it
//!   is the in-process single flight alone.
//! - **a cold load per key**: a [`TokenRegistry`] over [`RedisStore`] in which no
//!   tenant is resident, so each tenant's first request loads its token from Redis
//!   (`registry.manager(&key).bearer()`, as the adapters call it), against the same
//!   over [`KeyedMemoryStore`].
//!
//! `redis-server` is a prerequisite of the workspace (see the README); these benches
//! fail, saying so, without it.

use std::time::{Duration, Instant};

use procore_auth_core::{KeyedMemoryStore, KeyedTokenStore, MemoryStore, TokenRegistry};
use procore_auth_redis::RedisStore;
use procore_auth_testkit::RedisServer;
use tokio::runtime::Runtime;

use crate::e2e::Setup;
use crate::fresh_token;
use crate::registry::{self, UserId};

/// Waiters in a forced-refresh herd.
pub const HERD: usize = 100;
/// Tenants loaded cold per run.
pub const COLD_KEYS: usize = 100;

/// The Redis key of the single manager's user.
const USER_KEY: &str = "bench-user";

/// Where the tokens are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// In the process ([`MemoryStore`], [`KeyedMemoryStore`]): the baseline.
    Memory,
    /// In Redis ([`RedisStore`]): a refresh takes the key's lease.
    Redis,
}

impl Store {
    /// Both stores, the baseline first.
    pub const ALL: [Store; 2] = [Store::Memory, Store::Redis];

    /// A short name for reports, for the forced refresh (single manager).
    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "MemoryStore (in-process single flight)",
            Store::Redis => "RedisStore::for_key (lease in Redis)",
        }
    }

    /// A short name for reports, for the registry's cold loads.
    pub fn keyed_name(self) -> &'static str {
        match self {
            Store::Memory => "KeyedMemoryStore",
            Store::Redis => "RedisStore",
        }
    }

    /// A short name for reports, for the floor of the cold loads
    /// ([`ColdLoads::store_only`]).
    pub fn load_alone_name(self) -> &'static str {
        match self {
            Store::Memory => "KeyedMemoryStore::load alone (no registry)",
            Store::Redis => "RedisStore::load alone (GET + parse, no registry)",
        }
    }
}

/// Starts a private `redis-server` on a free port.
///
/// # Panics
///
/// If `redis-server` is not installed, or does not start.
pub fn start_redis() -> RedisServer {
    RedisServer::start().unwrap_or_else(|error| {
        panic!(
            "the Redis benches need `redis-server` on PATH, a prerequisite of this \
             workspace (see the README): {error}"
        )
    })
}

/// Connects a store to `redis` (on `runtime`, whose tasks keep the connection).
pub fn connect(runtime: &Runtime, redis: &RedisServer) -> RedisStore {
    runtime
        .block_on(RedisStore::connect(redis.url()))
        .expect("the private redis-server answers")
}

/// An emulator and a manager whose tokens `store` keeps: [`Setup::rejected_herd`]
/// and [`Setup::herd`] measure a forced refresh through it.
pub fn refresh_setup(runtime: &Runtime, store: Store, redis: &RedisServer) -> Setup {
    match store {
        Store::Memory => Setup::with_store(runtime, MemoryStore::new()),
        Store::Redis => Setup::with_store(runtime, connect(runtime, redis).for_key(USER_KEY)),
    }
}

/// [`HERD`] waiters after a forced expiry ([`Setup::rejected_herd`]); returns the
/// time until all hold the new token.
///
/// # Panics
///
/// Unless exactly one refresh served the herd.
pub fn forced_refresh(runtime: &Runtime, setup: &Setup) -> Duration {
    let (elapsed, refreshes) = setup.rejected_herd(runtime, HERD);
    assert_eq!(refreshes, 1, "one refresh per herd");
    elapsed
}

/// `keys` tenants whose tokens are in a store, none of them resident: the next
/// request for each loads it.
#[derive(Debug)]
pub struct ColdLoads {
    store: KeyedStore,
    keys: usize,
}

#[derive(Clone, Debug)]
enum KeyedStore {
    Memory(KeyedMemoryStore<UserId>),
    Redis(RedisStore),
}

impl ColdLoads {
    /// Puts the tokens of `keys` tenants in `store` (each its own), as their OAuth
    /// callbacks would (`registry.insert`).
    pub fn new(runtime: &Runtime, store: Store, redis: &RedisServer, keys: usize) -> Self {
        let store = match store {
            Store::Memory => KeyedStore::Memory(KeyedMemoryStore::new()),
            Store::Redis => KeyedStore::Redis(connect(runtime, redis)),
        };
        let cold = Self { store, keys };
        let registry = cold.registry();
        runtime.block_on(async {
            for index in 0..keys {
                registry
                    .insert(registry::user_id(index), fresh_token(&index.to_string()))
                    .await
                    .expect("the store saves");
            }
        });
        cold
    }

    /// A new registry over the store, no tenant resident.
    fn registry(&self) -> TokenRegistry<UserId> {
        let room = registry::room_for(self.keys);
        match &self.store {
            KeyedStore::Memory(store) => registry::empty(store.clone(), room),
            KeyedStore::Redis(store) => registry::empty(store.clone(), room),
        }
    }

    /// On a new registry, the first request of each tenant in turn
    /// (`registry.manager(&key).bearer()`, which loads its token from the store), in
    /// a task on `runtime` as a server's requests run; returns the time they took
    /// (building the registry is not measured).
    ///
    /// # Panics
    ///
    /// Unless every tenant got its own token, loaded once.
    pub fn run(&self, runtime: &Runtime) -> Duration {
        let registry = self.registry();
        let keys = self.keys;
        let tenants = registry.clone();
        let elapsed = in_task(runtime, async move {
            let started = Instant::now();
            for index in 0..keys {
                let bearer = tenants
                    .manager(&registry::user_id(index))
                    .bearer()
                    .await
                    .expect("the tenant's token is in the store");
                std::hint::black_box(bearer);
            }
            started.elapsed()
        });
        let metrics = registry.metrics();
        assert_eq!(
            (metrics.loaded, metrics.evicted),
            (self.keys as u64, 0),
            "{metrics:?}"
        );
        elapsed
    }

    /// The floor of [`run`](Self::run): each tenant's token read from the store
    /// directly (`KeyedTokenStore::load`: for Redis one `GET` and the JSON parsed),
    /// without a registry or a manager.
    pub fn store_only(&self, runtime: &Runtime) -> Duration {
        let (store, keys) = (self.store.clone(), self.keys);
        in_task(runtime, async move {
            let started = Instant::now();
            for index in 0..keys {
                let key = registry::user_id(index);
                let token = match &store {
                    KeyedStore::Memory(store) => KeyedTokenStore::load(store, &key).await,
                    KeyedStore::Redis(store) => KeyedTokenStore::load(store, &key).await,
                };
                std::hint::black_box(token.expect("the store answers").expect("a token"));
            }
            started.elapsed()
        })
    }

    /// How many tenants [`run`](Self::run) loads.
    pub fn keys(&self) -> usize {
        self.keys
    }
}

/// Runs `future` in a task on `runtime` (a worker thread, where requests run).
fn in_task<T: Send + 'static>(
    runtime: &Runtime,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    runtime
        .block_on(runtime.spawn(future))
        .expect("the task does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh_contention::runtime;

    #[test]
    fn each_store_refreshes_once_per_herd_and_loads_each_tenant() {
        let runtime = runtime();
        let redis = start_redis();
        for store in Store::ALL {
            let setup = refresh_setup(&runtime, store, &redis);
            for _ in 0..2 {
                forced_refresh(&runtime, &setup);
            }
            let cold = ColdLoads::new(&runtime, store, &redis, 5);
            for _ in 0..2 {
                cold.run(&runtime);
                cold.store_only(&runtime);
            }
        }
    }

    /// Each tenant gets its own token from Redis, not another's.
    #[test]
    fn cold_loads_from_redis_get_each_tenants_token() {
        let runtime = runtime();
        let redis = start_redis();
        let cold = ColdLoads::new(&runtime, Store::Redis, &redis, 3);
        let registry = cold.registry();
        for index in [2, 0, 1] {
            let bearer = runtime
                .block_on(registry.manager(&registry::user_id(index)).bearer())
                .expect("loaded");
            assert_eq!(
                Some(bearer.header_value()),
                fresh_token(&index.to_string()).header_value(),
                "tenant {index}"
            );
        }
    }
}
