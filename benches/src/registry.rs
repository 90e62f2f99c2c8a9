//! The multi-tenant path: a [`TokenRegistry`] keyed by Procore user id, full of
//! resident tenants with fresh tokens.
//!
//! Used by the tower comparison ([`Stack::ProcoreAuthRegistry`]), by the lookup
//! group (`registry.manager(&key)` + `fresh_bearer()` for random resident keys at
//! several sizes) and by the `tenant_memory` binary.
//!
//! [`Stack::ProcoreAuthRegistry`]: crate::tower_overhead::Stack::ProcoreAuthRegistry

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use procore_auth_core::{KeyedMemoryStore, KeyedTokenStore, Token, TokenManager, TokenRegistry};

use crate::token_read::{self, Reader};
use crate::{fresh_token, NeverRefreshes};

/// The tenant key a SaaS would use: the id of the Procore user who authorized the
/// app (Procore ids are integers).
pub type UserId = u64;

/// The first tenant's user id; tenant `n` is `FIRST_USER_ID + n`.
pub const FIRST_USER_ID: UserId = 8_000_000;

/// The resident sizes the lookup group measures.
pub const LOOKUP_SIZES: [usize; 3] = [10, 10_000, 1_000_000];

/// A registry whose `tenants` tenants are all resident, each with its own fresh
/// token. Tokens come from [`fresh_token`], so each tenant holds as many bytes of
/// token as the other benches' single manager.
#[derive(Debug)]
pub struct Fixture {
    registry: TokenRegistry<UserId>,
    tenants: usize,
}

impl Fixture {
    /// Builds the registry with a [`KeyedMemoryStore`] and room for
    /// [`room_for`]`(tenants)`, and inserts every tenant.
    pub fn new(tenants: usize) -> Self {
        Self::with_store(
            tenants,
            room_for(tenants),
            KeyedMemoryStore::new(),
            |index| fresh_token(&index.to_string()),
        )
    }

    /// Builds the registry with `store` and `max_resident`, and inserts tenant `n`
    /// with `token(n)`.
    ///
    /// # Panics
    ///
    /// If a tenant was evicted: `max_resident` leaves too little room.
    pub fn with_store(
        tenants: usize,
        max_resident: usize,
        store: impl KeyedTokenStore<UserId> + 'static,
        token: impl FnMut(usize) -> Token,
    ) -> Self {
        let registry = empty(store, max_resident);
        let fixture = Self { registry, tenants };
        fixture.insert_all(token);
        fixture
    }

    fn insert_all(&self, mut token: impl FnMut(usize) -> Token) {
        for index in 0..self.tenants {
            self.registry
                .insert(user_id(index), token(index))
                .now_or_never()
                .expect("the store answers at once")
                .expect("the store accepts the token");
        }
        let metrics = self.registry.metrics();
        assert_eq!(
            metrics.resident, self.tenants,
            "every tenant stays resident: {metrics:?}"
        );
        assert_eq!(metrics.evicted, 0, "no tenant was evicted: {metrics:?}");
    }

    /// The registry.
    pub fn registry(&self) -> &TokenRegistry<UserId> {
        &self.registry
    }

    /// How many tenants are resident.
    pub fn tenants(&self) -> usize {
        self.tenants
    }

    /// The key of resident tenant `index` (`index < tenants`).
    pub fn key(&self, index: usize) -> UserId {
        debug_assert!(index < self.tenants);
        user_id(index)
    }
}

/// A registry over `store` with room for `max_resident` tenants, none resident yet:
/// the first request for a key loads its token from `store`. Its tokens never
/// refresh (they are fresh).
pub fn empty(
    store: impl KeyedTokenStore<UserId> + 'static,
    max_resident: usize,
) -> TokenRegistry<UserId> {
    TokenRegistry::builder(NeverRefreshes)
        .store(store)
        .max_resident(max_resident)
        .build()
}

/// The `max_resident` that keeps `tenants` tenants resident: twice as many.
///
/// The registry's bound is approximate: its cache is split into shards (4 per core,
/// fewer for small capacities), each holding `max_resident / shards`, and keys do not
/// spread evenly over them. With `max_resident` equal to the number of tenants,
/// inserting them all evicts about 1 % (measured: 112 of 10 000, 32 of 1 000);
/// twice the room puts an eviction many standard deviations away at every size.
pub fn room_for(tenants: usize) -> usize {
    tenants.saturating_mul(2)
}

/// Tenant `index`'s user id.
pub fn user_id(index: usize) -> UserId {
    FIRST_USER_ID + index as UserId
}

/// A cheap pseudo-random sequence of tenant indexes (xorshift64, scaled to the size
/// without a division), the same in every run. Keep one across a benchmark's
/// batches: restarting it would visit the same few tenants again and again, and
/// they would stay in the CPU's caches.
#[derive(Debug, Clone)]
pub struct RandomTenants {
    state: u64,
    tenants: u64,
}

impl RandomTenants {
    /// Indexes in `0..tenants`.
    pub fn new(tenants: usize) -> Self {
        Self {
            state: 0x9E37_79B9_7F4A_7C15,
            tenants: tenants as u64,
        }
    }

    /// The next index.
    #[inline]
    pub fn next_index(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((u128::from(self.state) * u128::from(self.tenants)) >> 64) as usize
    }
}

/// `iterations` times: `registry.manager(&key)` then `fresh_bearer()` for the next
/// resident tenant of `tenants`; returns the elapsed time.
pub fn lookups(fixture: &Fixture, tenants: &mut RandomTenants, iterations: u64) -> Duration {
    let registry = fixture.registry();
    let started = Instant::now();
    for _ in 0..iterations {
        let key = fixture.key(tenants.next_index());
        let bearer = registry
            .manager(std::hint::black_box(&key))
            .fresh_bearer()
            .expect("resident tenants have fresh tokens");
        std::hint::black_box(bearer);
    }
    started.elapsed()
}

/// The floor for [`lookups`]: the same tenants' managers in a plain
/// `HashMap<UserId, TokenManager>` (std's SipHash, no lock, no clone of the manager),
/// read the same way in the same order, so both touch the same memory.
#[derive(Debug)]
pub struct PlainMap {
    managers: HashMap<UserId, TokenManager>,
}

impl PlainMap {
    /// The managers of every tenant of `fixture` (held here too, so none is evicted).
    pub fn new(fixture: &Fixture) -> Self {
        let managers = (0..fixture.tenants)
            .map(|index| {
                let key = fixture.key(index);
                (key, fixture.registry.manager(&key))
            })
            .collect();
        Self { managers }
    }
}

/// `iterations` times: `map.get(&key)` then `fresh_bearer()` for the next tenant of
/// `tenants`; returns the elapsed time.
pub fn plain_map_lookups(map: &PlainMap, tenants: &mut RandomTenants, iterations: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        let key = user_id(tenants.next_index());
        let bearer = map.managers[std::hint::black_box(&key)]
            .fresh_bearer()
            .expect("resident tenants have fresh tokens");
        std::hint::black_box(bearer);
    }
    started.elapsed()
}

/// The same read from one manager, without a registry (the floor the lookup adds
/// to): [`Reader::ManagerFresh`] on the token-read fixture.
pub fn single_manager_reads(fixture: &Arc<token_read::Fixture>, iterations: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(fixture.read(std::hint::black_box(Reader::ManagerFresh)));
    }
    started.elapsed()
}

/// The process's resident set size, in bytes (Linux: `VmRSS` of `/proc/self/status`);
/// `None` where that cannot be read.
pub fn resident_set_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// [`Fixture::new`], timed, with the growth of the resident set it caused; the
/// report is printed to stderr (building 1 000 000 tenants takes a while).
pub fn build_reporting(tenants: usize) -> Fixture {
    let before = resident_set_bytes();
    let started = Instant::now();
    let fixture = Fixture::new(tenants);
    let took = started.elapsed();
    let grown = resident_set_bytes()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    match grown {
        // A few pages say nothing per tenant.
        Some(grown) if tenants >= 1_000 => eprintln!(
            "built {tenants} resident tenants in {took:.2?}: resident set +{:.1} MiB, {} bytes per tenant",
            grown as f64 / 1_048_576.0,
            grown / tenants as u64
        ),
        _ => eprintln!("built {tenants} resident tenants in {took:.2?}"),
    }
    fixture
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures_util::FutureExt;
    use http::{header, Request, Response};
    use http_body_util::Empty;
    use procore_auth_tower::ProcoreAuthLayer;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// Each request gets its own tenant's token through the layer: the comparison
    /// measures the real thing.
    #[test]
    fn the_layer_attaches_the_requests_tenants_token() {
        let fixture = Fixture::new(3);
        let echo = tower::service_fn(|request: Request<Empty<Bytes>>| async move {
            let bearer = request.headers().get(header::AUTHORIZATION).cloned();
            Ok::<_, Infallible>(Response::new(bearer))
        });
        let mut service = ProcoreAuthLayer::new(fixture.registry().clone()).layer(echo);
        for index in [2, 0, 1] {
            let mut request = Request::get("https://api.procore.com/rest/v1.0/me")
                .body(Empty::new())
                .expect("valid request");
            request.extensions_mut().insert(fixture.key(index));
            let response = service
                .ready()
                .now_or_never()
                .expect("ready")
                .expect("ready")
                .call(request)
                .now_or_never()
                .expect("answers at once")
                .expect("authorized");
            let expected = fixture
                .registry()
                .manager(&fixture.key(index))
                .token()
                .expect("resident")
                .header_value()
                .cloned();
            assert!(expected.is_some());
            assert_eq!(response.into_body(), expected, "tenant {index}");
        }
        assert_eq!(fixture.registry().metrics().loaded, 3);
    }

    #[test]
    fn lookups_stay_among_the_resident_tenants() {
        let fixture = Fixture::new(10);
        lookups(&fixture, &mut RandomTenants::new(10), 1_000);
        let metrics = fixture.registry().metrics();
        assert_eq!((metrics.resident, metrics.loaded), (10, 10), "{metrics:?}");
        let mut tenants = RandomTenants::new(10);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            seen[tenants.next_index()] = true;
        }
        assert!(seen.iter().all(|seen| *seen), "{seen:?}");
    }
}
