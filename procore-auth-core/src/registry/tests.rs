//! The registry's own rules: tenants independent, bounded residency that never evicts a
//! manager in use, nothing lost on eviction, and no token without a tenant.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::*;
use crate::{
    AccessToken, Authorize, BoxFuture, Clock, ManualClock, ReauthorizationReason, RefreshToken,
};

/// Refreshes any tenant's token: the new refresh token is `<tenant>/<n>`, and refresh
/// tokens are single use, as Procore's. Refreshes presenting a tenant's token wait for
/// that tenant's gate, if it has one.
#[derive(Clone, Debug, Default)]
struct RotatingGrant {
    state: Arc<Mutex<GrantState>>,
}

#[derive(Debug, Default)]
struct GrantState {
    /// Refresh tokens presented, per tenant.
    presented: HashMap<String, Vec<String>>,
    burnt: HashSet<String>,
    gates: HashMap<String, Arc<Semaphore>>,
    revoked: Vec<String>,
}

fn tenant_of(refresh: &str) -> String {
    refresh.split('/').next().unwrap_or_default().to_owned()
}

impl RotatingGrant {
    fn gate(&self, tenant: &str) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        let mut state = self.state.lock().unwrap();
        state.gates.insert(tenant.to_owned(), Arc::clone(&gate));
        gate
    }

    fn refreshes_of(&self, tenant: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.presented.get(tenant).map_or(0, Vec::len)
    }
}

fn token_for(tenant: &str, n: usize, clock: &dyn Clock) -> Token {
    let now = clock.now();
    Token::new(
        AccessToken::new(format!("access {tenant}/{n}")),
        Some(RefreshToken::new(format!("{tenant}/{n}"))),
        now,
        Some(now + Duration::from_secs(5400)),
    )
    .unwrap()
}

impl TokenSource for RotatingGrant {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let refresh = current
                .and_then(Token::refresh_token)
                .map(|refresh| refresh.secret().to_owned())
                .ok_or(Error::reauthorization_required(
                    ReauthorizationReason::NoToken,
                ))?;
            let tenant = tenant_of(&refresh);
            let gate = self.state.lock().unwrap().gates.get(&tenant).cloned();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let mut state = self.state.lock().unwrap();
            if !state.burnt.insert(refresh.clone()) {
                return Err(Error::reauthorization_required(
                    ReauthorizationReason::InvalidGrant { description: None },
                ));
            }
            let presented = state.presented.entry(tenant.clone()).or_default();
            presented.push(refresh);
            Ok(token_for(&tenant, presented.len(), clock))
        })
    }

    fn revoke<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), Error>> {
        let refresh = token
            .refresh_token()
            .map(|refresh| refresh.secret().to_owned());
        self.state.lock().unwrap().revoked.extend(refresh);
        Box::pin(async { Ok(()) })
    }
}

struct Fixture {
    clock: ManualClock,
    grant: RotatingGrant,
    store: KeyedMemoryStore<String>,
    registry: TokenRegistry<String>,
}

fn fixture(max_resident: usize) -> Fixture {
    let clock = ManualClock::at_unix(1_700_000_000);
    let grant = RotatingGrant::default();
    let store = KeyedMemoryStore::new();
    let manager_clock = clock.clone();
    let registry = TokenRegistry::builder(grant.clone())
        .store(store.clone())
        .max_resident(max_resident)
        .request_policy(RequestPolicy::new(&crate::Environment::production()))
        .configure(move |_, manager| manager.clock(manager_clock.clone()))
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
    /// Seeds `tenant`'s token in the store, as a previous process left it.
    fn seed(&self, tenant: &str) {
        let token = token_for(tenant, 0, &self.clock);
        KeyedTokenStore::save(&self.store, &key(tenant), &token, None)
            .now_or_never()
            .unwrap()
            .unwrap();
    }

    fn stored_refresh_token(&self, tenant: &str) -> String {
        let stored = KeyedTokenStore::load(&self.store, &key(tenant))
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap();
        stored.refresh_token().unwrap().secret().to_owned()
    }
}

/// `count` tenants cycle through, each used a few times (as busy as the tenants under
/// test were, so the cache's scan resistance does not keep those for their past),
/// with never more than 10 of them (plus those in use) resident.
async fn cycle_tenants(f: &Fixture, count: usize) {
    for n in 0..count {
        let tenant = format!("t{n}");
        f.registry
            .insert(key(&tenant), token_for(&tenant, 0, &f.clock))
            .await
            .unwrap();
        for _ in 0..3 {
            f.registry.manager(&key(&tenant)).bearer().await.unwrap();
        }
        let resident = f.registry.metrics().resident;
        assert!(resident <= 12, "{resident} resident");
    }
}

fn current_refresh_token(manager: &TokenManager) -> String {
    let token = manager.token().unwrap();
    token.refresh_token().unwrap().secret().to_owned()
}

#[tokio::test]
async fn a_tenant_s_first_request_loads_its_token_from_the_store() {
    let f = fixture(10);
    f.seed("ann");
    let bearer = f.registry.manager(&key("ann")).bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access ann/0");
    assert_eq!(f.grant.refreshes_of("ann"), 0);
    assert_eq!(f.registry.metrics().loaded, 1);
    f.registry.manager(&key("ann")).bearer().await.unwrap();
    assert_eq!(f.registry.metrics().loaded, 1, "resident: not built again");
}

#[tokio::test]
async fn a_tenant_waiting_on_its_refresh_never_holds_up_another() {
    let f = fixture(10);
    f.seed("ann");
    f.seed("bob");
    let ann_gate = f.grant.gate("ann");
    f.clock.advance(Duration::from_secs(5400)); // both expired
    let ann = f.registry.manager(&key("ann"));
    let waiting: Vec<_> = (0..20).map(|_| ann.bearer()).collect();
    // Ann's refresh is stuck at her token endpoint; Bob's goes through.
    let bob = f.registry.manager(&key("bob")).bearer().await.unwrap();
    assert_eq!(bob.header_value(), "Bearer access bob/1");
    ann_gate.add_permits(1);
    for bearer in futures_util::future::join_all(waiting).await {
        assert_eq!(bearer.unwrap().header_value(), "Bearer access ann/1");
    }
    assert_eq!(f.grant.refreshes_of("ann"), 1, "one refresh for 20 waiters");
    assert_eq!(f.grant.refreshes_of("bob"), 1);
}

#[tokio::test]
async fn reauthorization_names_the_tenant() {
    let f = fixture(10);
    let error = f
        .registry
        .manager(&key("carol"))
        .bearer()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::ReauthorizationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.tenant().and_then(Tenant::key::<String>),
        Some(&key("carol"))
    );
    assert_eq!(error.tenant().and_then(Tenant::key::<u64>), None);
    assert!(error.to_string().contains("for tenant carol"), "{error}");
    // Shared by later callers too (the failure is remembered, not recomputed).
    let again = f
        .registry
        .manager(&key("carol"))
        .bearer()
        .await
        .unwrap_err();
    assert_eq!(
        again.tenant().map(ToString::to_string).as_deref(),
        Some("carol")
    );
}

#[tokio::test]
async fn residency_stays_bounded_and_an_evicted_tenant_comes_back_with_its_newest_pair() {
    let f = fixture(10);
    f.seed("ann");
    let ann = f.registry.manager(&key("ann"));
    ann.bearer().await.unwrap();
    // Rotate Ann's pair, then let her manager go idle.
    f.clock.advance(Duration::from_secs(5400));
    ann.bearer().await.unwrap();
    assert_eq!(current_refresh_token(&ann), "ann/1");
    drop(ann);

    cycle_tenants(&f, 1_000).await;
    assert!(
        f.registry.metrics().resident <= 10,
        "{:?}",
        f.registry.metrics()
    );
    let metrics = f.registry.metrics();
    assert!(metrics.evicted >= 990, "{metrics:?}");
    assert!(
        f.registry.tenant_metrics(&key("ann")).is_none(),
        "Ann was evicted"
    );

    let ann = f.registry.manager(&key("ann"));
    ann.bearer().await.unwrap();
    assert_eq!(
        current_refresh_token(&ann),
        "ann/1",
        "the newest pair, from the store"
    );
    // And it refreshes from it: the burnt `ann/0` is never presented again.
    f.clock.advance(Duration::from_secs(5400));
    ann.bearer().await.unwrap();
    assert_eq!(f.stored_refresh_token("ann"), "ann/2");
    let presented = f.grant.state.lock().unwrap().presented["ann"].clone();
    assert_eq!(presented, ["ann/0", "ann/1"]);
}

#[tokio::test]
async fn a_manager_in_use_or_refreshing_is_never_evicted() {
    let f = fixture(10);
    f.seed("held");
    f.seed("refreshing");
    let held = f.registry.manager(&key("held"));
    held.bearer().await.unwrap();
    let gate = f.grant.gate("refreshing");
    f.clock.advance(Duration::from_secs(5400));
    // A refresh starts, and every handle to its manager goes: only the refresh
    // (spawned on the runtime) still needs it.
    let refreshing = f.registry.manager(&key("refreshing")).bearer();
    drop(refreshing);
    tokio::task::yield_now().await;

    cycle_tenants(&f, 500).await;
    assert!(f.registry.tenant_metrics(&key("held")).is_some());
    assert!(f.registry.tenant_metrics(&key("refreshing")).is_some());
    // Bounded all the same: 10, plus the two in use.
    assert!(
        f.registry.metrics().resident <= 12,
        "{:?}",
        f.registry.metrics()
    );

    gate.add_permits(1);
    let bearer = f
        .registry
        .manager(&key("refreshing"))
        .bearer()
        .await
        .unwrap();
    assert_eq!(bearer.header_value(), "Bearer access refreshing/1");
    assert_eq!(
        f.grant.refreshes_of("refreshing"),
        1,
        "one manager, one refresh"
    );
}

#[tokio::test]
async fn a_request_for_the_api_that_names_no_tenant_gets_no_token() {
    let f = fixture(10);
    f.seed("ann");
    let tokens = Tokens::from(f.registry.clone());
    let api: http::Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
    let headers = HeaderMap::new();

    let mut extensions = Extensions::new();
    let Authorize::Pending(waiting) = tokens.authorize(&api, &headers, &extensions) else {
        panic!("a request without a tenant must fail");
    };
    assert!(matches!(waiting.await, Err(Error::TenantNotSelected)));
    // A key of another type names no tenant either.
    extensions.insert(7_u64);
    let Authorize::Pending(waiting) = tokens.authorize(&api, &headers, &extensions) else {
        panic!("a key of the wrong type must fail");
    };
    assert!(matches!(waiting.await, Err(Error::TenantNotSelected)));

    extensions.insert(key("ann"));
    let Authorize::Pending(waiting) = tokens.authorize(&api, &headers, &extensions) else {
        panic!("Ann's token is not loaded yet");
    };
    assert_eq!(
        waiting.await.unwrap().bearer().header_value(),
        "Bearer access ann/0"
    );
    let Authorize::Ready(authorized) = tokens.authorize(&api, &headers, &extensions) else {
        panic!("Ann's token is fresh now");
    };
    assert_eq!(authorized.bearer().header_value(), "Bearer access ann/0");

    // Not for the API: untouched, tenant or not.
    let elsewhere: http::Uri = "https://example.com/".parse().unwrap();
    assert!(matches!(
        tokens.authorize(&elsewhere, &headers, &Extensions::new()),
        Authorize::Skip
    ));
}

#[tokio::test]
async fn a_key_function_selects_the_tenant_from_the_headers() {
    let f = fixture(10);
    f.seed("company-7");
    let tokens = f.registry.keyed_by(|headers, _| {
        let company = headers.get("procore-company-id")?.to_str().ok()?;
        Some(format!("company-{company}"))
    });
    let api: http::Uri = "https://api.procore.com/rest/v1.0/projects"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("procore-company-id", "7".parse().unwrap());
    let Authorize::Pending(waiting) = tokens.authorize(&api, &headers, &Extensions::new()) else {
        panic!("not loaded yet");
    };
    assert_eq!(
        waiting.await.unwrap().bearer().header_value(),
        "Bearer access company-7/0"
    );
    let Authorize::Pending(waiting) = tokens.authorize(&api, &HeaderMap::new(), &Extensions::new())
    else {
        panic!("no company header: no tenant");
    };
    assert!(matches!(waiting.await, Err(Error::TenantNotSelected)));
}

#[tokio::test]
async fn removing_a_tenant_revokes_deletes_and_forgets_it() {
    let f = fixture(10);
    f.seed("ann");
    let ann = f.registry.manager(&key("ann"));
    ann.bearer().await.unwrap();
    drop(ann);
    f.registry.remove(&key("ann")).await.unwrap();
    assert_eq!(f.grant.state.lock().unwrap().revoked, ["ann/0"]);
    assert!(f.registry.tenant_metrics(&key("ann")).is_none());
    assert!(KeyedTokenStore::load(&f.store, &key("ann"))
        .now_or_never()
        .unwrap()
        .unwrap()
        .is_none());
    let error = f.registry.manager(&key("ann")).bearer().await.unwrap_err();
    assert!(
        matches!(error, Error::ReauthorizationRequired { .. }),
        "{error:?}"
    );
}

#[test]
fn tenants_print_their_key_and_nothing_else() {
    let f = fixture(10);
    let manager = f.registry.manager(&key("ann"));
    let debug = format!("{manager:?}");
    assert!(debug.contains("Tenant(ann)"), "{debug}");
    assert!(format!("{:?}", f.registry).contains("resident: 1"));
}
