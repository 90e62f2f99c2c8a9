//! Adversarial tests of `TokenRegistry` (issue 12), each written to fail if the bug it
//! names exists. Tokens carry the word `SECRET` so logs can be checked for leaks; refresh
//! tokens are `<tenant>/RT-SECRET-<n>`, single use, as Procore's.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Extensions, HeaderMap, StatusCode};
use procore_auth_core::{
    AccessToken, Authorize, BoxFuture, Clock, Environment, Error, KeyedFileStore, KeyedMemoryStore,
    KeyedTokenStore, ManualClock, ReauthorizationReason, RefreshToken, RequestPolicy, StoreError,
    Tenant, Token, TokenRegistry, TokenSource, Tokens,
};
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------

/// A rotating refresh-token grant for any tenant, with per-tenant gates, scripted 503s
/// and a record of every refresh token presented (refused ones included).
#[derive(Clone, Default)]
struct Grant {
    state: Arc<Mutex<GrantState>>,
}

/// Prints no token (the manager's `Debug` prints its source's).
impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Grant")
    }
}

#[derive(Debug, Default)]
struct GrantState {
    /// Every refresh token presented, per tenant, in order (refused ones too).
    presented: HashMap<String, Vec<String>>,
    burnt: HashSet<String>,
    issued: HashMap<String, usize>,
    gates: HashMap<String, Arc<Semaphore>>,
    revoke_gates: HashMap<String, Arc<Semaphore>>,
    failing: HashMap<String, u32>,
    revoked: Vec<String>,
}

fn tenant_of(refresh: &str) -> String {
    refresh
        .rsplit_once('/')
        .map_or(refresh, |(tenant, _)| tenant)
        .to_owned()
}

fn token_for(tenant: &str, n: usize, clock: &dyn Clock) -> Token {
    let now = clock.now();
    Token::new(
        // Control characters cannot go in a header: replaced in the access token.
        AccessToken::new(format!(
            "AT-SECRET-{n}-{}",
            tenant.replace(|c: char| !c.is_ascii_graphic(), "_")
        )),
        Some(RefreshToken::new(format!("{tenant}/RT-SECRET-{n}"))),
        now,
        Some(now + Duration::from_secs(5400)),
    )
    .unwrap()
}

fn rt(tenant: &str, n: usize) -> String {
    format!("{tenant}/RT-SECRET-{n}")
}

impl Grant {
    fn gate(&self, tenant: &str) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        self.state
            .lock()
            .unwrap()
            .gates
            .insert(tenant.to_owned(), Arc::clone(&gate));
        gate
    }

    fn revoke_gate(&self, tenant: &str) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        self.state
            .lock()
            .unwrap()
            .revoke_gates
            .insert(tenant.to_owned(), Arc::clone(&gate));
        gate
    }

    fn fail_next(&self, tenant: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .failing
            .insert(tenant.to_owned(), times);
    }

    fn burn(&self, refresh: &str) {
        self.state.lock().unwrap().burnt.insert(refresh.to_owned());
    }

    fn presented(&self, tenant: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .presented
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Refresh tokens presented more than once (by anyone).
    fn presented_twice(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut seen = HashSet::new();
        let mut twice = Vec::new();
        for refresh in state.presented.values().flatten() {
            if !seen.insert(refresh.clone()) {
                twice.push(refresh.clone());
            }
        }
        twice
    }
}

impl TokenSource for Grant {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let Some(refresh) = current
                .and_then(Token::refresh_token)
                .map(|refresh| refresh.secret().to_owned())
            else {
                return Err(Error::ReauthorizationRequired {
                    reason: ReauthorizationReason::NoToken,
                    tenant: None,
                });
            };
            let tenant = tenant_of(&refresh);
            let gate = self.state.lock().unwrap().gates.get(&tenant).cloned();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let mut state = self.state.lock().unwrap();
            state
                .presented
                .entry(tenant.clone())
                .or_default()
                .push(refresh.clone());
            if let Some(failing) = state.failing.get_mut(&tenant).filter(|n| **n > 0) {
                *failing -= 1;
                return Err(Error::TokenEndpoint {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: None,
                    retry_after: None,
                });
            }
            if !state.burnt.insert(refresh) {
                return Err(Error::ReauthorizationRequired {
                    reason: ReauthorizationReason::InvalidGrant { description: None },
                    tenant: None,
                });
            }
            let issued = state.issued.entry(tenant.clone()).or_insert(0);
            *issued += 1;
            Ok(token_for(&tenant, *issued, clock))
        })
    }

    fn revoke<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let refresh = token
                .refresh_token()
                .map(|refresh| refresh.secret().to_owned())
                .unwrap_or_default();
            let gate = self
                .state
                .lock()
                .unwrap()
                .revoke_gates
                .get(&tenant_of(&refresh))
                .cloned();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let mut state = self.state.lock().unwrap();
            state.burnt.insert(refresh.clone());
            state.revoked.push(refresh);
            Ok(())
        })
    }
}

/// A keyed memory store with per-key faults.
#[derive(Clone, Debug, Default)]
struct FaultyKeyed {
    memory: KeyedMemoryStore<String>,
    failing_saves: Arc<Mutex<HashMap<String, u32>>>,
    panicking_loads: Arc<Mutex<HashSet<String>>>,
    failing_loads: Arc<Mutex<HashSet<String>>>,
}

impl FaultyKeyed {
    fn fail_next_saves(&self, key: &str, saves: u32) {
        self.failing_saves
            .lock()
            .unwrap()
            .insert(key.to_owned(), saves);
    }

    fn stored_refresh(&self, key: &str) -> Option<String> {
        let stored = KeyedTokenStore::load(&self.memory, &key.to_owned())
            .now_or_never()
            .unwrap()
            .unwrap()?;
        Some(stored.refresh_token()?.secret().to_owned())
    }
}

impl KeyedTokenStore<String> for FaultyKeyed {
    fn load<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        assert!(
            !self.panicking_loads.lock().unwrap().contains(key),
            "store told to panic for {key}"
        );
        if self.failing_loads.lock().unwrap().contains(key) {
            let error = StoreError::from(std::io::Error::other("unreadable"));
            return Box::pin(async move { Err(error) });
        }
        self.memory.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a String,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let failing = {
            let mut failing = self.failing_saves.lock().unwrap();
            match failing.get_mut(key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if failing {
            let error = StoreError::from(std::io::Error::other("disk full"));
            return Box::pin(async move { Err(error) });
        }
        self.memory.save(key, token, expected)
    }

    fn clear<'a>(&'a self, key: &'a String) -> BoxFuture<'a, Result<(), StoreError>> {
        self.memory.clear(key)
    }
}

struct Fixture {
    clock: ManualClock,
    grant: Grant,
    store: FaultyKeyed,
    registry: TokenRegistry<String>,
}

fn fixture(max_resident: usize) -> Fixture {
    fixture_with(max_resident, |builder| builder)
}

fn fixture_with(
    max_resident: usize,
    tweak: impl Fn(procore_auth_core::TokenManagerBuilder) -> procore_auth_core::TokenManagerBuilder
        + Send
        + Sync
        + 'static,
) -> Fixture {
    let clock = ManualClock::at_unix(1_700_000_000);
    let grant = Grant::default();
    let store = FaultyKeyed::default();
    let manager_clock = clock.clone();
    let registry = TokenRegistry::builder(grant.clone())
        .store(store.clone())
        .max_resident(max_resident)
        .request_policy(RequestPolicy::new(&Environment::production()))
        .configure(move |_, manager| tweak(manager.clock(manager_clock.clone())))
        .build();
    Fixture {
        clock,
        grant,
        store,
        registry,
    }
}

fn key(tenant: &str) -> String {
    tenant.to_owned()
}

impl Fixture {
    fn seed(&self, tenant: &str) {
        let token = token_for(tenant, 0, &self.clock);
        KeyedTokenStore::save(&self.store.memory, &key(tenant), &token, None)
            .now_or_never()
            .unwrap()
            .unwrap();
    }

    /// `count` other tenants each used a few times, so idle ones are evicted.
    async fn cycle(&self, prefix: &str, count: usize) {
        for n in 0..count {
            let tenant = format!("{prefix}{n}");
            self.registry
                .insert(key(&tenant), token_for(&tenant, 0, &self.clock))
                .await
                .unwrap();
            for _ in 0..3 {
                self.registry.manager(&key(&tenant)).bearer().await.unwrap();
            }
        }
    }
}

fn header(bearer: &procore_auth_core::Bearer) -> String {
    bearer.header_value().to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. Eviction after a failed save drops the only copy of the live refresh token.
// ---------------------------------------------------------------------------------------

/// A refresh rotates Ann's pair (RT-0 → RT-1) but the store's save fails once (disk
/// full, a Redis blip): the manager keeps RT-1 in memory only. The registry then evicts
/// Ann's idle manager; the next request reloads RT-0 (burnt) from the store and her next
/// refresh presents it: `invalid_grant`, Ann is locked out although nothing was wrong
/// with her authorization.
#[tokio::test]
async fn eviction_after_a_failed_save_must_not_lock_the_tenant_out() {
    let f = fixture(10);
    f.seed("ann");
    let ann = f.registry.manager(&key("ann"));
    ann.bearer().await.unwrap();
    f.store.fail_next_saves("ann", 1);
    f.clock.advance(Duration::from_secs(5400));
    let bearer = ann.bearer().await.unwrap();
    assert_eq!(header(&bearer), "Bearer AT-SECRET-1-ann");
    assert!(ann.last_store_error().is_some(), "the save failed");
    assert_eq!(f.store.stored_refresh("ann").unwrap(), rt("ann", 0));
    drop(ann);

    f.cycle("other", 200).await;
    let evicted = f.registry.tenant_metrics(&key("ann")).is_none();

    f.clock.advance(Duration::from_secs(5400));
    let again = f.registry.manager(&key("ann")).bearer().await;
    assert!(
        again.is_ok(),
        "Ann locked out after a failed save (evicted: {evicted}): {again:?}; presented {:?}",
        f.grant.presented("ann")
    );
    assert!(
        f.grant.presented_twice().is_empty(),
        "a burnt refresh token was presented again: {:?}",
        f.grant.presented_twice()
    );
}

/// `insert` after an OAuth callback, and the store's save fails: `insert` says so, but
/// the documented behaviour is "the token is in use even then". Once the idle manager
/// is evicted, the token is gone: the tenant has no token at all.
#[tokio::test]
async fn an_inserted_token_whose_save_failed_survives_eviction() {
    let f = fixture(10);
    f.store.fail_next_saves("kim", 1);
    let inserted = f
        .registry
        .insert(key("kim"), token_for("kim", 0, &f.clock))
        .await;
    assert!(matches!(inserted, Err(Error::Store(_))), "{inserted:?}");
    let bearer = f.registry.manager(&key("kim")).bearer().await.unwrap();
    assert_eq!(
        header(&bearer),
        "Bearer AT-SECRET-0-kim",
        "in use even then"
    );
    f.cycle("other", 200).await;
    let evicted = f.registry.tenant_metrics(&key("kim")).is_none();
    let bearer = f.registry.manager(&key("kim")).bearer().await;
    assert!(
        bearer.is_ok(),
        "the token that was in use is gone after an eviction (evicted: {evicted}): {bearer:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Eviction forgets per-tenant refusal and back-off.
// ---------------------------------------------------------------------------------------

/// Carol's token endpoint answers 503: her manager backs off. It stays resident
/// while it cools down (a reloaded one would call the failing endpoint at once).
#[tokio::test]
async fn a_backing_off_tenant_keeps_its_back_off_across_eviction() {
    let f = fixture_with(10, |manager| {
        manager.backoff(Duration::from_secs(60), Duration::from_secs(600))
    });
    f.seed("carol");
    f.grant.fail_next("carol", 100);
    f.clock.advance(Duration::from_secs(5400));
    let error = f
        .registry
        .manager(&key("carol"))
        .bearer()
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let error = f
        .registry
        .manager(&key("carol"))
        .bearer()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BackingOff { .. }), "{error:?}");
    assert_eq!(f.grant.presented("carol").len(), 1);

    // The other tenants' tokens must be fresh at the current time.
    f.cycle("other", 200).await;
    assert!(
        f.registry.tenant_metrics(&key("carol")).is_some(),
        "kept while cooling down"
    );
    let _ = f.registry.manager(&key("carol")).bearer().await;
    assert_eq!(
        f.grant.presented("carol").len(),
        1,
        "the back-off was lost with the evicted manager: the failing endpoint was called again at once"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Cancelled `remove` leaves the tenant revoked-in-memory forever.
// ---------------------------------------------------------------------------------------

/// `remove` is dropped (an HTTP handler's timeout) while the revoke call is pending at
/// Procore. Nothing was revoked and the store still holds the token. The token is used
/// while fresh, but once it expires the resident manager answers
/// `ReauthorizationRequired { Revoked }` to every request, for ever: no refresh, and
/// the store is never re-read (its re-read time stays `Duration::MAX`).
#[tokio::test]
async fn a_cancelled_remove_does_not_leave_the_tenant_stuck() {
    let f = fixture(10);
    f.seed("dan");
    f.registry.manager(&key("dan")).bearer().await.unwrap();
    let _revoke_gate = f.grant.revoke_gate("dan");
    {
        let dan = key("dan");
        let mut removing = Box::pin(f.registry.remove(&dan));
        assert!((&mut removing).now_or_never().is_none(), "revoke pending");
    } // dropped
    assert!(f.grant.state.lock().unwrap().revoked.is_empty());
    assert!(f.store.stored_refresh("dan").is_some(), "still stored");

    // While the token is fresh it is served…
    f.registry.manager(&key("dan")).bearer().await.unwrap();
    // …but past its expiry (and long past any store re-read interval) Dan must refresh.
    f.clock.advance(Duration::from_secs(5400 + 600));
    let bearer = f.registry.manager(&key("dan")).bearer().await;
    assert!(
        bearer.is_ok(),
        "a cancelled remove left Dan stuck although nothing was revoked: {bearer:?}; \
         presented {:?}",
        f.grant.presented("dan")
    );
}

// ---------------------------------------------------------------------------------------
// 4. Two managers for one tenant: `remove` drops a manager that is still held.
// ---------------------------------------------------------------------------------------

/// A caller holds Eve's manager (a long-lived job; "a caller holding it keeps it
/// resident"). Eve uninstalls (`remove`) and installs again (`insert`): the registry
/// builds a second manager while the first lives on. The first re-reads the store (as
/// any manager needing reauthorization does), adopts the new pair, and when it expires
/// both managers refresh it: the new refresh token is presented twice.
#[tokio::test]
async fn remove_then_insert_never_leaves_two_managers_refreshing_one_tenant() {
    let f = fixture_with(10, |manager| manager.store_recheck(Duration::from_secs(1)));
    f.seed("eve");
    let held = f.registry.manager(&key("eve"));
    held.bearer().await.unwrap();
    f.registry.remove(&key("eve")).await.unwrap();
    f.registry
        .insert(key("eve"), token_for("eve", 100, &f.clock))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(5));
    let adopted = held.bearer().await;
    let current = f.registry.manager(&key("eve"));
    current.bearer().await.unwrap();

    let gate = f.grant.gate("eve");
    f.clock.advance(Duration::from_secs(5400));
    let first = held.bearer();
    let second = current.bearer();
    tokio::task::yield_now().await;
    gate.add_permits(2);
    let (first, second) = tokio::join!(first, second);
    assert!(
        f.grant.presented_twice().is_empty(),
        "two managers of one tenant both presented {:?} (held adopted: {:?}; outcomes {:?} / {:?})",
        f.grant.presented_twice(),
        adopted.map(|b| header(&b)),
        first.map(|b| header(&b)),
        second.map(|b| header(&b)),
    );
}

// ---------------------------------------------------------------------------------------
// 5. Eviction racing with requests: many threads, tiny bound, forced expiries.
// ---------------------------------------------------------------------------------------

/// 8 worker threads hammer 40 tenants through a registry keeping 2 resident, while the
/// clock jumps past expiry now and then: every token must be its own tenant's, and no
/// refresh token may ever be presented twice (two managers for one tenant).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn eviction_racing_with_requests_never_makes_two_managers_or_mixes_tenants() {
    let f = Arc::new(fixture(2));
    const TENANTS: usize = 40;
    for n in 0..TENANTS {
        f.seed(&format!("t{n}"));
    }
    let tokens = Tokens::from(f.registry.clone());
    let api: http::Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
    let mut tasks = Vec::new();
    for worker in 0..8_usize {
        let (f, tokens, api) = (Arc::clone(&f), tokens.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..600_usize {
                let tenant = format!("t{}", (i * 7 + worker * 13) % TENANTS);
                if worker == 0 && i % 150 == 0 {
                    f.clock.advance(Duration::from_secs(5400));
                }
                let mut extensions = Extensions::new();
                extensions.insert(tenant.clone());
                let authorized = match tokens.authorize(&api, &HeaderMap::new(), &extensions) {
                    Authorize::Ready(authorized) => authorized,
                    Authorize::Pending(waiting) => waiting.await.unwrap(),
                    Authorize::Skip => panic!("skipped"),
                };
                let value = header(authorized.bearer());
                assert!(
                    value.ends_with(&format!("-{tenant}")),
                    "{tenant} got {value}"
                );
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                drop(authorized);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        f.grant.presented_twice().is_empty(),
        "presented twice: {:?}",
        f.grant.presented_twice()
    );
    let metrics = f.registry.metrics();
    assert!(metrics.resident <= 2 + 8, "{metrics:?}");
    // The race was run: many evictions, and refreshes across them.
    let refreshes: usize = f
        .grant
        .state
        .lock()
        .unwrap()
        .presented
        .values()
        .map(Vec::len)
        .sum();
    assert!(
        metrics.evicted > 1_000 && refreshes > TENANTS,
        "{metrics:?}, {refreshes} refreshes"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Residency: pinned forever, bounds, 100k tenants.
// ---------------------------------------------------------------------------------------

/// Extreme bounds build and work: 0 (taken as 1), 1 and `usize::MAX`.
#[tokio::test]
async fn extreme_bounds_build_and_stay_bounded() {
    for bound in [0, 1, usize::MAX] {
        let f = fixture(bound);
        for n in 0..50 {
            let tenant = format!("b{n}");
            f.seed(&tenant);
            let bearer = f.registry.manager(&key(&tenant)).bearer().await.unwrap();
            assert_eq!(header(&bearer), format!("Bearer AT-SECRET-0-{tenant}"));
            let resident = f.registry.metrics().resident;
            assert!(resident <= bound.max(1), "bound {bound}: {resident}");
        }
    }
    // With one resident, two tenants in use at once both stay (pinned), each with its
    // own token.
    let f = fixture(1);
    f.seed("x");
    f.seed("y");
    let x = f.registry.manager(&key("x"));
    let y = f.registry.manager(&key("y"));
    assert_eq!(header(&x.bearer().await.unwrap()), "Bearer AT-SECRET-0-x");
    assert_eq!(header(&y.bearer().await.unwrap()), "Bearer AT-SECRET-0-y");
    assert_eq!(f.registry.metrics().resident, 2);
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A store that keeps nothing: only the registry's own memory is measured.
#[derive(Debug, Default)]
struct Forgetful;

impl KeyedTokenStore<u64> for Forgetful {
    fn load<'a>(&'a self, _: &'a u64) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
    fn save<'a>(
        &'a self,
        _: &'a u64,
        _: &'a Token,
        _: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn clear<'a>(&'a self, _: &'a u64) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Mints a token for anyone (client credentials).
#[derive(Debug)]
struct Minting;

impl TokenSource for Minting {
    fn fetch<'a>(
        &'a self,
        _: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let now = clock.now();
            Token::new(
                AccessToken::new("AT-SECRET-minted"),
                None,
                now,
                Some(now + Duration::from_secs(5400)),
            )
        })
    }
}

/// 100 000 tenants through a registry keeping 100: residency and memory stay bounded.
/// (The loop yields now and then so the runtime runs the refresh tasks it spawns; a
/// loop that never yields piles them up in the runtime's queue, which is not the
/// registry's doing.)
#[tokio::test]
async fn a_hundred_thousand_tenants_keep_memory_bounded() {
    let registry: TokenRegistry<u64> = TokenRegistry::builder(Minting)
        .store(Forgetful)
        .max_resident(100)
        .build();
    for user in 0..5_000_u64 {
        registry.manager(&user).bearer().await.unwrap();
        if user % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let before = resident_bytes();
    for user in 5_000..105_000_u64 {
        registry.manager(&user).bearer().await.unwrap();
        if user % 10 == 0 {
            tokio::task::yield_now().await;
        }
        if user % 10_000 == 0 {
            assert!(
                registry.metrics().resident <= 100,
                "{:?}",
                registry.metrics()
            );
        }
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        registry.metrics().resident <= 100,
        "{:?}",
        registry.metrics()
    );
    assert!(
        grown < 16 << 20,
        "memory grew by {grown} bytes over 100 000 tenants"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Panicking configure / keys; faulty keyed stores.
// ---------------------------------------------------------------------------------------

/// The per-tenant `configure` closure panics while building one tenant's manager (the
/// first time): a thread waiting for that same tenant must not hang, the tenant must be
/// buildable afterwards, and other tenants are unaffected.
#[test]
fn a_panicking_configure_neither_hangs_waiters_nor_poisons_the_registry() {
    let clock = ManualClock::at_unix(1_700_000_000);
    let grant = Grant::default();
    let store = FaultyKeyed::default();
    let panicked = Arc::new(AtomicBool::new(false));
    let registry: TokenRegistry<String> = {
        let (clock, panicked) = (clock.clone(), Arc::clone(&panicked));
        TokenRegistry::builder(grant)
            .store(store.clone())
            .configure(move |key, manager| {
                if key == "boom" && !panicked.swap(true, Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("configure failed for boom");
                }
                manager.clock(clock.clone())
            })
            .build()
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let first = {
        let registry = registry.clone();
        std::thread::spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                registry.manager(&key("boom"));
            }))
            .is_err()
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    {
        let registry = registry.clone();
        std::thread::spawn(move || {
            let manager = registry.manager(&key("boom"));
            sender
                .send(manager.tenant().map(ToString::to_string))
                .unwrap();
        });
    }
    assert!(first.join().unwrap(), "the first build panicked");
    let waiter = receiver.recv_timeout(Duration::from_secs(5));
    assert_eq!(
        waiter,
        Ok(Some("boom".to_owned())),
        "a waiter for the panicked build hung"
    );
    KeyedTokenStore::save(&store.memory, &key("ok"), &token_for("ok", 0, &clock), None)
        .now_or_never()
        .unwrap()
        .unwrap();
    let bearer = registry
        .manager(&key("ok"))
        .bearer()
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(header(&bearer), "Bearer AT-SECRET-0-ok");
}

/// A keyed store that panics, or fails, for one tenant: that tenant gets an error (no
/// hang), every other tenant is served, and the failing tenant recovers once the store
/// does.
#[tokio::test]
async fn one_tenant_s_failing_store_affects_no_other() {
    let f = fixture(10);
    for tenant in ["p", "q", "ok1", "ok2"] {
        f.seed(tenant);
    }
    f.store.panicking_loads.lock().unwrap().insert(key("p"));
    f.store.failing_loads.lock().unwrap().insert(key("q"));
    f.store.fail_next_saves("q", 100);
    for tenant in ["p", "q"] {
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            f.registry.manager(&key(tenant)).bearer(),
        )
        .await
        .expect("no hang");
        assert!(outcome.is_err(), "{tenant}: {outcome:?}");
    }
    for tenant in ["ok1", "ok2"] {
        let bearer = f.registry.manager(&key(tenant)).bearer().await.unwrap();
        assert_eq!(header(&bearer), format!("Bearer AT-SECRET-0-{tenant}"));
    }
    f.store.panicking_loads.lock().unwrap().clear();
    f.clock.advance(Duration::from_secs(600)); // past any back-off
    let bearer = f.registry.manager(&key("p")).bearer().await.unwrap();
    assert_eq!(header(&bearer), "Bearer AT-SECRET-0-p");
}

// ---------------------------------------------------------------------------------------
// 8. Keys: wrong types, key file names, Display of keys in logs and errors.
// ---------------------------------------------------------------------------------------

/// Keys of another type than `K` in the extensions (a `&str` for a `String` registry, an
/// `Arc<String>`, a `u32` for `u64`) name no tenant: `TenantNotSelected`, no token.
#[tokio::test]
async fn keys_of_the_wrong_type_never_get_a_token() {
    let f = fixture(10);
    f.seed("ann");
    let tokens = Tokens::from(f.registry.clone());
    let api: http::Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
    let check = |extensions: Extensions| {
        let tokens = tokens.clone();
        let api = api.clone();
        async move {
            match tokens.authorize(&api, &HeaderMap::new(), &extensions) {
                Authorize::Pending(waiting) => {
                    assert!(matches!(waiting.await, Err(Error::TenantNotSelected)));
                }
                other => panic!("a wrong key type got {other:?}"),
            }
        }
    };
    let mut extensions = Extensions::new();
    extensions.insert("ann");
    check(extensions).await;
    let mut extensions = Extensions::new();
    extensions.insert(Arc::new(key("ann")));
    check(extensions).await;
    let mut extensions = Extensions::new();
    extensions.insert(Box::new(key("ann")));
    check(extensions).await;
    assert_eq!(f.registry.metrics().loaded, 0, "no manager built");
}

/// `KeyedFileStore` names files after keys, keeping ASCII letters as they are: keys
/// `Ann` and `ann` get `Ann.json` and `ann.json`, one and the same file on the
/// case-insensitive file systems of macOS and Windows, so one tenant would load (and
/// refresh with) the other's token. Distinct keys must give names distinct ignoring
/// ASCII case.
#[tokio::test]
async fn key_file_names_stay_distinct_on_case_insensitive_file_systems() {
    let directory = tempfile::tempdir().unwrap();
    let store = KeyedFileStore::new(directory.path());
    let clock = ManualClock::at_unix(1_700_000_000);
    for tenant in ["Ann", "ann", "company-7/User", "company-7/user"] {
        KeyedTokenStore::<String>::save(&store, &key(tenant), &token_for(tenant, 0, &clock), None)
            .await
            .unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    let folded: HashSet<String> = names.iter().map(|name| name.to_ascii_lowercase()).collect();
    assert_eq!(
        folded.len(),
        names.len(),
        "distinct tenants share a file on a case-insensitive file system: {names:?}"
    );
}

/// Tenant keys that are Windows device names (`con`, `nul`, `aux`, `com1`…) map to
/// `con.json` and the like, which Windows reserves whatever the extension: such a
/// tenant's token cannot be stored there. (A portability check of the names chosen.)
#[tokio::test]
async fn key_file_names_avoid_windows_device_names() {
    let directory = tempfile::tempdir().unwrap();
    let store = KeyedFileStore::new(directory.path());
    let clock = ManualClock::at_unix(1_700_000_000);
    for tenant in ["con", "NUL", "aux", "com1", "lpt9", "prn"] {
        KeyedTokenStore::<String>::save(&store, &key(tenant), &token_for(tenant, 0, &clock), None)
            .await
            .unwrap();
    }
    let reserved: Vec<String> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            let stem = name
                .split('.')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            ["con", "prn", "aux", "nul"].contains(&stem.as_str())
                || ((stem.starts_with("com") || stem.starts_with("lpt"))
                    && stem.len() == 4
                    && stem.as_bytes()[3].is_ascii_digit())
        })
        .collect();
    assert!(reserved.is_empty(), "Windows device names: {reserved:?}");
}

/// One tenant per company installation (the issue's own example), each manager
/// configured with its company's default `Procore-Company-Id`: the registry replaces
/// every tenant's request policy with its shared one after `configure`, silently, so
/// no tenant's requests carry their company (and a registry-wide `with_company_id`
/// would send one company's id with every tenant's token).
#[tokio::test]
async fn a_tenant_s_own_company_id_is_not_silently_dropped() {
    let store: KeyedMemoryStore<u64> = KeyedMemoryStore::new();
    let registry: TokenRegistry<u64> = TokenRegistry::builder(Minting)
        .store(store)
        .request_policy(RequestPolicy::new(&Environment::production()))
        .configure(|company, manager| {
            manager.request_policy(
                RequestPolicy::new(&Environment::production()).with_company_id(*company),
            )
        })
        .build();
    let tokens = Tokens::from(registry);
    let api: http::Uri = "https://api.procore.com/rest/v1.0/projects"
        .parse()
        .unwrap();
    for company in [7_u64, 8] {
        let mut extensions = Extensions::new();
        extensions.insert(company);
        let authorized = match tokens.authorize(&api, &HeaderMap::new(), &extensions) {
            Authorize::Ready(authorized) => authorized,
            Authorize::Pending(waiting) => waiting.await.unwrap(),
            Authorize::Skip => panic!("skipped"),
        };
        let mut headers = HeaderMap::new();
        drop(authorized.attach(&mut headers));
        assert_eq!(
            headers
                .get(procore_auth_core::PROCORE_COMPANY_ID)
                .map(|id| id.to_str().unwrap().to_owned()),
            Some(company.to_string()),
            "tenant {company}'s own company id was dropped: {headers:?}"
        );
    }
}

/// Captured log output: every line is checked for secrets as it is written; only the
/// lines the log tests look at are kept (bounded), so the memory test is not skewed.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    kept: Vec<String>,
    secret: Option<String>,
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        let mut captured = self.0.lock().unwrap();
        if text.contains("SECRET") && captured.secret.is_none() {
            captured.secret = Some(text.clone().into_owned());
        }
        if (text.contains("forged") || text.contains("tenant=ann}")) && captured.kept.len() < 1_000
        {
            captured.kept.push(text.into_owned());
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One process-wide subscriber at TRACE (thread-local ones race with the other tests'
/// threads over the callsites' cached interest): every test's logs pass through it, so
/// the leak check covers them all.
fn global_logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        tracing::subscriber::set_global_default(logs.subscriber())
            .expect("no other global subscriber");
        logs
    })
}

impl Logs {
    fn text(&self) -> String {
        self.0.lock().unwrap().kept.concat()
    }

    fn secret(&self) -> Option<String> {
        self.0.lock().unwrap().secret.clone()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish()
    }
}

/// Everything a tenant's manager logs (load, refresh, 401, `invalid_grant`, revoke) and
/// every error and `Debug` output names the tenant but never holds a token.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let logs = global_logs();
    let f = fixture(10);
    f.seed("ann");
    let ann = f.registry.manager(&key("ann"));
    let first = ann.bearer().await.unwrap();
    f.clock.advance(Duration::from_secs(5400));
    let second = ann.bearer().await.unwrap();
    let _ = ann.rejected(second.generation()).await;
    let mut debug = vec![
        format!("{ann:?}"),
        format!("{:?}", f.registry),
        format!("{first:?}"),
    ];
    f.grant
        .burn(ann.token().unwrap().refresh_token().unwrap().secret());
    f.clock.advance(Duration::from_secs(5400));
    let error = ann.bearer().await.unwrap_err();
    debug.push(format!("{error:?} {error}"));
    f.registry
        .insert(key("ann"), token_for("ann", 50, &f.clock))
        .await
        .unwrap();
    f.registry.remove(&key("ann")).await.unwrap();
    tokio::task::yield_now().await;
    let text = logs.text();
    assert!(
        text.contains("procore_tenant{tenant=ann}"),
        "the span is there: {text}"
    );
    assert_eq!(logs.secret(), None, "a secret reached the logs");
    for debug in debug {
        assert!(
            !debug.contains("SECRET"),
            "a secret in Debug output: {debug}"
        );
    }
}

/// A key whose `Display` holds a newline (a user name, a company name) forges a log
/// line through the `procore_tenant` span.
#[tokio::test(flavor = "current_thread")]
async fn a_key_with_control_characters_cannot_forge_log_lines() {
    let logs = global_logs();
    let f = fixture(10);
    let evil = "mallory\nERROR forged: all tenants revoked";
    f.seed(evil);
    let manager = f.registry.manager(&key(evil));
    manager.bearer().await.unwrap();
    f.clock.advance(Duration::from_secs(5400));
    manager.bearer().await.unwrap();
    let text = logs.text();
    assert!(text.contains("procore_tenant"), "logs captured: {text}");
    let forged: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("ERROR forged"))
        .collect();
    assert!(
        forged.is_empty(),
        "log lines forged through a tenant key: {forged:#?}"
    );
}

/// `Tenant`'s `Debug` (what `{:?}` of an error or a manager prints) writes the key's
/// `Display` raw, newlines and escape sequences included, where `Debug` conventionally
/// escapes.
#[test]
fn tenant_debug_escapes_control_characters() {
    let f = fixture(10);
    let manager = f.registry.manager(&key("mallory\n\u{1b}[2Jforged"));
    let debug = format!("{:?}", manager.tenant().unwrap());
    assert!(
        !debug.contains('\n') && !debug.contains('\u{1b}'),
        "Tenant Debug is not escaped: {debug:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Errors shared by waiters, insert during refresh, remove racing requests,
//    cancellation, per-tenant clocks.
// ---------------------------------------------------------------------------------------

/// Twenty requests wait on one refresh that ends in `invalid_grant`: every one of them,
/// and every later one, gets an error naming the tenant.
#[tokio::test]
async fn every_waiter_s_reauthorization_error_names_the_tenant() {
    let f = fixture(10);
    f.seed("gil");
    f.grant.burn(&rt("gil", 0));
    let gate = f.grant.gate("gil");
    f.clock.advance(Duration::from_secs(5400));
    let manager = f.registry.manager(&key("gil"));
    let waiting: Vec<_> = (0..20).map(|_| manager.bearer()).collect();
    gate.add_permits(1);
    let mut errors: Vec<Error> = futures_util::future::join_all(waiting)
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap_err())
        .collect();
    errors.push(manager.bearer().await.unwrap_err());
    f.clock.advance(Duration::from_secs(10)); // a store re-read
    errors.push(manager.bearer().await.unwrap_err());
    for error in errors {
        assert_eq!(
            error.tenant().and_then(Tenant::key::<String>),
            Some(&key("gil")),
            "{error:?}"
        );
    }
    assert_eq!(f.grant.presented("gil").len(), 1);
}

/// `insert` (a new sign-in) while the tenant's refresh is at the token endpoint: the
/// inserted token wins in memory and in the store, and the next refresh presents the
/// inserted refresh token (never the refreshed one's or a burnt one).
#[tokio::test]
async fn insert_during_a_refresh_wins_everywhere() {
    let f = fixture(10);
    f.seed("hal");
    let gate = f.grant.gate("hal");
    f.clock.advance(Duration::from_secs(5400));
    let manager = f.registry.manager(&key("hal"));
    let waiting = manager.bearer();
    tokio::task::yield_now().await;
    f.registry
        .insert(key("hal"), token_for("hal", 100, &f.clock))
        .await
        .unwrap();
    gate.add_permits(100);
    let _ = waiting.await;
    assert_eq!(f.store.stored_refresh("hal").unwrap(), rt("hal", 100));
    assert_eq!(
        header(&manager.bearer().await.unwrap()),
        "Bearer AT-SECRET-100-hal"
    );
    drop(manager);
    f.cycle("other", 100).await; // evicted: reload from the store
    f.clock.advance(Duration::from_secs(5400));
    f.registry.manager(&key("hal")).bearer().await.unwrap();
    assert_eq!(f.grant.presented("hal"), [rt("hal", 0), rt("hal", 100)]);
}

/// `remove` while requests for the tenant are waiting on its refresh: each request gets
/// the tenant's own token or a reauthorization error naming it; afterwards the tenant
/// is gone from memory and store, and the refreshed pair was revoked.
#[tokio::test]
async fn remove_racing_with_requests() {
    let f = fixture(10);
    f.seed("ivy");
    f.seed("jon");
    let gate = f.grant.gate("ivy");
    f.clock.advance(Duration::from_secs(5400));
    let ivy = f.registry.manager(&key("ivy"));
    let waiting: Vec<_> = (0..10).map(|_| ivy.bearer()).collect();
    drop(ivy);
    let registry = f.registry.clone();
    let removing = tokio::spawn(async move { registry.remove(&key("ivy")).await });
    tokio::task::yield_now().await;
    gate.add_permits(1);
    for outcome in futures_util::future::join_all(waiting).await {
        match outcome {
            Ok(bearer) => assert_eq!(header(&bearer), "Bearer AT-SECRET-1-ivy"),
            Err(error) => assert_eq!(
                error.tenant().and_then(Tenant::key::<String>),
                Some(&key("ivy"))
            ),
        }
    }
    removing.await.unwrap().unwrap();
    assert!(f.store.stored_refresh("ivy").is_none());
    assert!(f.registry.tenant_metrics(&key("ivy")).is_none());
    assert!(f
        .grant
        .state
        .lock()
        .unwrap()
        .revoked
        .contains(&rt("ivy", 1)));
    let jon = f.registry.manager(&key("jon")).bearer().await.unwrap();
    assert_eq!(header(&jon), "Bearer AT-SECRET-1-jon");
}

/// Every tenant's request is dropped right after it started a refresh (a timeout): the
/// spawned refreshes still finish, one per tenant, nothing stays pinned, and each tenant
/// is served its refreshed token.
#[tokio::test]
async fn dropping_every_request_mid_refresh_leaves_nothing_stuck_or_pinned() {
    let f = fixture(5);
    let tenants: Vec<String> = (0..30).map(|n| format!("c{n}")).collect();
    let gates: Vec<_> = tenants
        .iter()
        .map(|tenant| {
            f.seed(tenant);
            f.grant.gate(tenant)
        })
        .collect();
    f.clock.advance(Duration::from_secs(5400));
    let tokens = Tokens::from(f.registry.clone());
    let api: http::Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
    for tenant in &tenants {
        let mut extensions = Extensions::new();
        extensions.insert(tenant.clone());
        let Authorize::Pending(mut waiting) =
            tokens.authorize(&api, &HeaderMap::new(), &extensions)
        else {
            panic!("expired: must wait");
        };
        assert!((&mut waiting).now_or_never().is_none());
    }
    assert!(f.registry.metrics().resident >= 30, "refreshing: pinned");
    for gate in &gates {
        gate.add_permits(1);
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    f.cycle("other", 50).await;
    let metrics = f.registry.metrics();
    assert!(metrics.resident <= 5, "{metrics:?}");
    for tenant in &tenants {
        let bearer = f.registry.manager(tenant).bearer().await.unwrap();
        assert_eq!(header(&bearer), format!("Bearer AT-SECRET-1-{tenant}"));
        assert_eq!(f.grant.presented(tenant), [rt(tenant, 0)]);
    }
}

/// Tenants with wildly different clocks (one ten years ahead, one behind): each
/// refreshes by its own clock only.
#[tokio::test]
async fn per_tenant_clocks_stay_per_tenant() {
    let base = ManualClock::at_unix(1_700_000_000);
    let ahead = ManualClock::at_unix(1_700_000_000 + 10 * 365 * 86_400);
    let grant = Grant::default();
    let store = FaultyKeyed::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let registry: TokenRegistry<String> = {
        let (base, ahead, calls) = (base.clone(), ahead.clone(), Arc::clone(&calls));
        TokenRegistry::builder(grant.clone())
            .store(store.clone())
            .configure(move |key, manager| {
                calls.fetch_add(1, Ordering::SeqCst);
                manager.clock(if key == "ahead" {
                    ahead.clone()
                } else {
                    base.clone()
                })
            })
            .build()
    };
    for tenant in ["ahead", "now"] {
        KeyedTokenStore::save(
            &store.memory,
            &key(tenant),
            &token_for(tenant, 0, &base),
            None,
        )
        .now_or_never()
        .unwrap()
        .unwrap();
    }
    let ahead_bearer = registry.manager(&key("ahead")).bearer().await.unwrap();
    let now_bearer = registry.manager(&key("now")).bearer().await.unwrap();
    assert_eq!(header(&ahead_bearer), "Bearer AT-SECRET-1-ahead");
    assert_eq!(header(&now_bearer), "Bearer AT-SECRET-0-now");
    assert!(grant.presented("now").is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Tokens (and the registry) are shared by clones across OS threads: each thread gets
/// its own tenant's token.
#[test]
fn tokens_cloned_across_threads_keep_tenants_apart() {
    let f = Arc::new(fixture(3));
    for n in 0..12 {
        f.seed(&format!("th{n}"));
    }
    let tokens = Tokens::from(f.registry.clone());
    let threads: Vec<_> = (0..12)
        .map(|n| {
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let tenant = format!("th{n}");
                let api: http::Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
                for _ in 0..200 {
                    let mut extensions = Extensions::new();
                    extensions.insert(tenant.clone());
                    let authorized = match tokens.authorize(&api, &HeaderMap::new(), &extensions) {
                        Authorize::Ready(authorized) => authorized,
                        Authorize::Pending(waiting) => runtime.block_on(waiting).unwrap(),
                        Authorize::Skip => panic!("skipped"),
                    };
                    assert_eq!(
                        header(authorized.bearer()),
                        format!("Bearer AT-SECRET-0-{tenant}")
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(f.grant.presented_twice().is_empty());
}
