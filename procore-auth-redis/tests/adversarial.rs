//! Adversarial tests of the Redis token store (issue 13). Each test FAILS if the bug it
//! names exists and passes once it is fixed. Run: `cargo test -p procore-auth-redis --test adversarial`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procore_auth_core::{
    AccessToken, AuthorizationCode, ClientSecret, Clock, CoarseTime, Environment,
    Error as AuthError, KeyedTokenStore, OAuthClient, RefreshOutcome, RefreshToken,
    RefreshTokenGrant, RefreshTurn, SystemClock, Token, TokenManager,
};
use procore_auth_redis::{RedisStore, DEFAULT_PREFIX};
use procore_auth_reqwest::ReqwestTransport;
use procore_auth_testkit::{Emulator, RedisServer, Route};

// ---------------------------------------------------------------- helpers

fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).expect("the emulator's base URL"),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

async fn user_token(emulator: &Emulator) -> Token {
    let code = emulator.authorize_code_for(emulator.default_user(), "http://localhost");
    oauth(emulator)
        .exchange_code(
            &ReqwestTransport::new().unwrap(),
            &AuthorizationCode::new(code),
            "http://localhost",
        )
        .await
        .expect("an authorization-code exchange")
}

/// A wall clock `behind` the real one (a replica on a host whose clock is off).
#[derive(Clone, Debug)]
struct SkewedClock {
    behind: Duration,
    coarse: CoarseTime,
}

impl SkewedClock {
    fn behind(behind: Duration) -> Self {
        let coarse = CoarseTime::new(SystemClock.now() - behind);
        let ticking = coarse.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(5));
            ticking.set(SystemClock.now() - behind);
        });
        Self { behind, coarse }
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> SystemTime {
        SystemClock.now() - self.behind
    }
    fn monotonic(&self) -> Duration {
        SystemClock.monotonic()
    }
    fn coarse(&self) -> CoarseTime {
        self.coarse.clone()
    }
}

#[derive(Default)]
struct Knobs {
    clock: Option<SkewedClock>,
    lease_ttl: Option<Duration>,
}

const KEY: &str = "company-7/user-1";

/// A manager with its own Redis connections, as a separate process would have.
async fn replica(emulator: &Emulator, redis_url: &str, knobs: Knobs) -> TokenManager {
    let mut builder = RedisStore::builder(redis_url);
    if let Some(ttl) = knobs.lease_ttl {
        builder = builder.lease_ttl(ttl);
    }
    let store = builder.connect().await.unwrap();
    let grant = RefreshTokenGrant::new(oauth(emulator), ReqwestTransport::new().unwrap());
    let mut manager = TokenManager::builder(grant)
        .store(store.for_key(KEY))
        .backoff(Duration::from_millis(100), Duration::from_millis(100))
        .store_recheck(Duration::from_millis(200));
    if let Some(clock) = knobs.clock {
        manager = manager.clock(clock);
    }
    manager.build()
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn token_key(key: &str) -> String {
    format!("{DEFAULT_PREFIX}{{{key}}}")
}

fn token(access: &str, refresh: Option<&str>, issued_at: u64) -> Token {
    Token::new(
        AccessToken::new(access),
        refresh.map(RefreshToken::new),
        UNIX_EPOCH + Duration::from_secs(issued_at),
        Some(UNIX_EPOCH + Duration::from_secs(issued_at + 5400)),
    )
    .unwrap()
}

/// Whether a refresh token was presented more than once (a burnt one presented).
fn presented_twice(consumed: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    consumed
        .iter()
        .filter(|token| !seen.insert((*token).clone()))
        .cloned()
        .collect()
}

async fn client_count(url: &str) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    list.lines().count()
}

// ------------------------------------------------- 1. clock skew between processes

/// Procore sends `created_at`, but a replica whose clock is > 60 s off ignores it
/// (`MAX_CLOCK_DISAGREEMENT`) and stamps its pairs with its own clock. Replica `slow`
/// (clock 120 s behind) rotates T0 -> T1; T1's `issued_at` is then *earlier* than T0's.
/// Replica `fast` still holds T0 and gets a 401: the store holds T1 and remembers that
/// T1 replaced T0, but TURN answers `replaced` only if `issued_at(stored) >=
/// issued_at(presenting)`, and the manager adopts only pairs not older than its own,
/// so `fast` takes the lease and presents the burnt T0: `invalid_grant`, and
/// `ReauthorizationRequired` although a live pair sits in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_replica_pair_is_adopted_not_a_burnt_token_presented() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().unwrap();
    let fast = replica(&emulator, &redis.url(), Knobs::default()).await;
    fast.set_token(user_token(&emulator).await).await.unwrap();
    let slow = replica(
        &emulator,
        &redis.url(),
        Knobs {
            clock: Some(SkewedClock::behind(Duration::from_secs(120))),
            ..Knobs::default()
        },
    )
    .await;
    let fast_generation = fast.bearer().await.unwrap().generation();
    let slow_generation = slow.bearer().await.unwrap().generation();
    emulator.expire_all_tokens();
    slow.rejected(slow_generation).await.unwrap().unwrap();
    assert_eq!(emulator.stats().refresh_token_grants, 1);

    let result = fast.rejected(fast_generation).await;
    let stats = emulator.stats();
    assert!(
        presented_twice(&stats.consumed_refresh_tokens).is_empty() && stats.failed_token_calls == 0,
        "the fast replica presented the burnt refresh token: {} refresh grants, {} failed \
         token calls; its result: {result:?}",
        stats.refresh_token_grants,
        stats.failed_token_calls
    );
    assert!(matches!(result, Ok(Some(_))), "{result:?}");
}

/// The same with an OAuth server that sends no `created_at` (the emulator's
/// `floor_issue_times`): every replica stamps pairs with its own clock, and a skew of
/// only 3 s between two hosts is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seconds_of_skew_without_created_at_presents_a_burnt_token() {
    let emulator = Emulator::builder().floor_issue_times(true).start().await;
    let redis = RedisServer::start().unwrap();
    let fast = replica(&emulator, &redis.url(), Knobs::default()).await;
    fast.set_token(user_token(&emulator).await).await.unwrap();
    let slow = replica(
        &emulator,
        &redis.url(),
        Knobs {
            clock: Some(SkewedClock::behind(Duration::from_secs(3))),
            ..Knobs::default()
        },
    )
    .await;
    let fast_generation = fast.bearer().await.unwrap().generation();
    let slow_generation = slow.bearer().await.unwrap().generation();
    emulator.expire_all_tokens();
    slow.rejected(slow_generation).await.unwrap().unwrap();

    let result = fast.rejected(fast_generation).await;
    let stats = emulator.stats();
    assert!(
        stats.failed_token_calls == 0,
        "the fast replica presented the burnt refresh token ({} failed token calls): {result:?}",
        stats.failed_token_calls
    );
    assert!(matches!(result, Ok(Some(_))), "{result:?}");
}

// ----------------------------------- 2. a save that fails after Procore rotated

/// Another application (or an operator) wrote a non-JSON value at the token key.
/// Replica A refreshes: it cannot read the store, takes the lease, presents T0, and
/// its compare-and-swap save of T1 fails (`Corrupt`); it releases `unchanged`. Replica
/// B then takes the lease and presents the burnt T0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_value_at_the_key_makes_the_fleet_present_a_burnt_token() {
    let emulator = Emulator::start().await;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let a = replica(&emulator, &url, Knobs::default()).await;
    a.set_token(user_token(&emulator).await).await.unwrap();
    let b = replica(&emulator, &url, Knobs::default()).await;
    let a_generation = a.bearer().await.unwrap().generation();
    let b_generation = b.bearer().await.unwrap().generation();
    let () = redis::cmd("SET")
        .arg(token_key(KEY))
        .arg("written by another app")
        .query_async(&mut raw(&url).await)
        .await
        .unwrap();

    emulator.expire_all_tokens();
    let a_result = a.rejected(a_generation).await;
    let b_result = b.rejected(b_generation).await;
    let stats = emulator.stats();
    assert!(
        presented_twice(&stats.consumed_refresh_tokens).is_empty() && stats.failed_token_calls == 0,
        "a burnt refresh token was presented: {} refresh grants, {} failed; A: {a_result:?}, \
         B: {b_result:?}",
        stats.refresh_token_grants,
        stats.failed_token_calls
    );
}

// ------------------------------------------- 3. JSON the Rust side accepts, Lua not

/// A token seeded by another tool with explicit nulls (`"access_token": null`: "start
/// from a refresh token alone"; or `"refresh_token": null`) loads fine in Rust, but
/// the SAVE script sees `cjson.null` (truthy userdata) instead of nil, so every
/// compare-and-swap against it is a `Conflict`: the first refresh's pair is never saved.
#[tokio::test]
async fn explicit_json_nulls_do_not_break_compare_and_swap() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let mut connection = raw(&redis.url()).await;
    let mut failures = Vec::new();
    for (key, json) in [
        (
            "refresh-only",
            r#"{"access_token":null,"refresh_token":"r0","issued_at":1700000000,"expires_at":null}"#,
        ),
        (
            "no-refresh",
            r#"{"access_token":"a0","refresh_token":null,"issued_at":1700000000,"expires_at":1700005400}"#,
        ),
    ] {
        let key = key.to_owned();
        let () = redis::cmd("SET")
            .arg(token_key(&key))
            .arg(json)
            .query_async(&mut connection)
            .await
            .unwrap();
        let loaded = store
            .load(&key)
            .await
            .expect("Rust reads it")
            .expect("a token");
        let saved = store
            .save(&key, &token("a1", Some("r1"), 1_700_000_100), Some(&loaded))
            .await;
        if saved.is_err() {
            failures.push(format!(
                "{key}: compare-and-swap against the stored pair (as loaded) failed: {saved:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ------------------------------------------------ 4. connections during a herd

/// 300 tenants of a registry, each waiting for a peer's refresh: every waiter opens a
/// pub/sub connection of its own. Redis's `maxclients` (10 000 by default, often far
/// lower on managed plans) is exhausted by a fleet-wide expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_waiters_does_not_open_a_connection_each() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let store = RedisStore::builder(&url)
        .max_wait(Duration::from_secs(8))
        .poll_interval(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let mut connection = raw(&url).await;
    const WAITERS: usize = 300;
    for i in 0..WAITERS {
        let () = redis::cmd("SET")
            .arg(format!("{}:lease", token_key(&format!("tenant-{i}"))))
            .arg("a peer")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let baseline = client_count(&url).await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("tenant-{i}");
                let _ = KeyedTokenStore::begin_refresh(&store, &key, None).await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = client_count(&url).await;
    for waiter in &waiters {
        waiter.abort();
    }
    assert!(
        during <= baseline + 10,
        "{WAITERS} waiters in one process hold {} Redis connections (baseline {baseline})",
        during - baseline
    );
}

/// Cancelling waiters (their futures dropped) leaks neither connections (beyond the
/// store's one shared subscription) nor leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_leak_no_connection_and_no_lease() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let store = RedisStore::connect(&url).await.unwrap();
    let mut connection = raw(&url).await;
    let () = redis::cmd("SET")
        .arg(format!("{}:lease", token_key(KEY)))
        .arg("a peer")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let baseline = client_count(&url).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let _ = KeyedTokenStore::begin_refresh(&store, &KEY.to_owned(), None).await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for waiter in &waiters {
        waiter.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The store keeps one shared subscription for its waiters, and no more.
    assert!(
        client_count(&url).await <= baseline + 1,
        "connections leaked"
    );
    let owner: Option<String> = redis::cmd("GET")
        .arg(format!("{}:lease", token_key(KEY)))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("a peer"));
}

// -------------------------------------- 5. waiting is bounded by max_wait

/// A TCP proxy in front of Redis that forwards the first connection (the store's
/// connection manager) and black-holes every later one: new connections hang, as
/// during a partition that drops SYNs, a frozen Redis host, or a full conntrack
/// table. A waiter's pub/sub connection (`get_async_pubsub`, `SUBSCRIBE`) has no
/// timeout, so `begin_refresh` waits far beyond `max_wait` (1 s here), and so does every
/// request of that tenant behind the manager's single flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_refresh_returns_within_max_wait_when_new_connections_hang() {
    let redis = RedisServer::start().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("redis://{}/", listener.local_addr().unwrap());
    let upstream = format!("127.0.0.1:{}", redis.port());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                let server = TcpStream::connect(&upstream).unwrap();
                pipe(stream.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, stream);
            } else {
                held.push(stream);
            }
        }
    });
    let store = RedisStore::builder(&proxy_url)
        .max_wait(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(50))
        .response_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("{}:lease", token_key(KEY)))
        .arg("a peer")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut raw(&redis.url()).await)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let turn = tokio::time::timeout(
        Duration::from_secs(10),
        KeyedTokenStore::begin_refresh(&store, &KEY.to_owned(), None),
    )
    .await;
    assert!(
        turn.is_ok(),
        "begin_refresh (max_wait 1 s) still waiting after {:?}; connections opened: {}",
        started.elapsed(),
        accepted.load(Ordering::SeqCst)
    );
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// The waiter's subscription is killed (`CLIENT KILL TYPE pubsub`, as on a proxy
/// restart); the peer's save then publishes to nobody. The waiter must notice by
/// polling, well within `max_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_subscription_broke_still_sees_the_peers_save() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let store = RedisStore::builder(&url)
        .max_wait(Duration::from_secs(20))
        .poll_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let peer = RedisStore::connect(&url).await.unwrap();
    let key = KEY.to_owned();
    let now = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t0 = token("a0", Some("r0"), now);
    peer.save(&key, &t0, None).await.unwrap();
    let RefreshTurn::Go(Some(lease)) = peer.begin_refresh(&key, Some(&t0)).await.unwrap() else {
        panic!("the peer takes the lease");
    };
    let waiter = {
        let store = store.clone();
        let key = key.clone();
        let t0 = t0.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let turn = store.begin_refresh(&key, Some(&t0)).await;
            (turn.map(|turn| format!("{turn:?}")), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut raw(&url).await)
        .await
        .unwrap();
    assert!(killed >= 1, "the waiter was subscribed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.save(&key, &token("a1", Some("r1"), now), Some(&t0))
        .await
        .unwrap();
    let saved_at = tokio::time::Instant::now();
    let (turn, _) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter noticed the save within 5 s")
        .unwrap();
    assert!(saved_at.elapsed() < Duration::from_secs(2));
    assert_eq!(turn.unwrap(), "PeerSaved");
    lease.end(RefreshOutcome::Saved).await;
}

// ------------------------------------------------------------ 6. secrets

#[tokio::test]
async fn the_redis_password_is_in_no_debug_or_error_output() {
    const PASSWORD: &str = "hunter2-s3cret";
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:1/");
    let builder = format!("{:?}", RedisStore::builder(&url));
    let error = RedisStore::connect(&url).await.unwrap_err();
    let mut chain = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        chain.push_str(&format!(" {inner}"));
        source = inner.source();
    }
    assert!(
        !chain.contains(PASSWORD),
        "the connect error shows the password: {chain}"
    );
    assert!(
        !builder.contains(PASSWORD),
        "RedisStoreBuilder's Debug shows the password: {builder}"
    );
}

// ------------------------------------------------------ 7. configuration edges

/// `max_wait(Duration::MAX)` ("wait as long as it takes") panics in every
/// `begin_refresh` (`Instant + Duration` overflows): through a manager, every refresh
/// fails (`SourcePanicked`).
#[tokio::test]
async fn max_wait_forever_does_not_panic() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::builder(redis.url())
        .max_wait(Duration::MAX)
        .connect()
        .await
        .unwrap();
    let turn = tokio::spawn(async move {
        matches!(
            KeyedTokenStore::begin_refresh(&store, &KEY.to_owned(), None).await,
            Ok(RefreshTurn::Go(Some(_)))
        )
    })
    .await;
    assert!(
        matches!(turn, Ok(true)),
        "begin_refresh with max_wait = Duration::MAX: {turn:?}"
    );
}

/// A huge lease TTL is passed to `SET … PX` unclamped: Redis refuses it
/// ("invalid expire time") and no refresh can ever take the lease.
#[tokio::test]
async fn a_huge_lease_ttl_still_lets_a_refresh_take_the_lease() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::builder(redis.url())
        .lease_ttl(Duration::from_secs(u64::MAX / 1000))
        .connect()
        .await
        .unwrap();
    let turn = KeyedTokenStore::begin_refresh(&store, &KEY.to_owned(), None).await;
    assert!(
        matches!(turn, Ok(RefreshTurn::Go(Some(_)))),
        "begin_refresh with a huge lease_ttl: {turn:?}"
    );
}

/// A lease whose `end` is never called (its holder's future dropped, or a panic
/// unwinding through the manager's refresh) stays in Redis for its whole TTL (10 s by
/// default): every peer waits that long. Dropping it should release it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lease_is_released() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let peer = RedisStore::builder(redis.url())
        .max_wait(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let key = KEY.to_owned();
    let RefreshTurn::Go(Some(lease)) = store.begin_refresh(&key, None).await.unwrap() else {
        panic!("the lease");
    };
    drop(lease);
    let turn = peer.begin_refresh(&key, None).await;
    assert!(
        matches!(turn, Ok(RefreshTurn::Go(Some(_)))),
        "a peer is still locked out 1 s after the holder dropped its lease: {turn:?}"
    );
}

// ------------------------------------------------------------ 8. key names

/// Tenant names with braces, colons, spaces and newlines stay apart in one store.
#[tokio::test]
async fn odd_tenant_names_stay_apart() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let names = [
        "a",
        "a}",
        "}a",
        "a}:lease",
        "a:lease",
        "{a}",
        "a b",
        "a\nb",
        "",
        "a}:refused",
        "a}:replaced",
        "a}:events",
    ];
    for (i, name) in names.iter().enumerate() {
        let name = (*name).to_owned();
        store
            .save(
                &name,
                &token(&format!("a{i}"), Some(&format!("r{i}")), 1_700_000_000),
                None,
            )
            .await
            .unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let loaded = store.load(&(*name).to_owned()).await.unwrap().unwrap();
        assert_eq!(
            loaded.access_token().unwrap().secret(),
            format!("a{i}"),
            "{name:?}"
        );
    }
}

/// Two stores with different prefixes on one Redis (two apps, or two environments)
/// could share a key when a tenant name or a prefix holds braces: prefix `app:` +
/// tenant `acme}{x` and prefix `app:{acme}` + tenant `x` would both give
/// `app:{acme}{x}`. Tenant names are escaped inside the hash tag, and a prefix with
/// braces is refused.
#[tokio::test]
async fn two_prefixes_never_share_a_key() {
    let redis = RedisServer::start().unwrap();
    let refused = RedisStore::builder(redis.url())
        .prefix("app:{acme}")
        .connect()
        .await;
    assert!(matches!(
        refused,
        Err(procore_auth_redis::Error::InvalidPrefix)
    ));
    let one = RedisStore::builder(redis.url())
        .prefix("app:")
        .connect()
        .await
        .unwrap();
    let two = RedisStore::builder(redis.url())
        .prefix("app:acme")
        .connect()
        .await
        .unwrap();
    one.save(
        &"acme}{x".to_owned(),
        &token("one", Some("r-one"), 1_700_000_000),
        None,
    )
    .await
    .unwrap();
    for tenant in ["x", "}{x", "acme}{x"] {
        let seen = two.load(&tenant.to_owned()).await.unwrap();
        assert!(
            seen.is_none(),
            "store `app:acme` tenant {tenant:?} reads another's token"
        );
    }
}

/// A Redis that enforces hash slots for scripts (Redis Cluster, and single-endpoint
/// sharded proxies): here a one-node cluster that owns every slot, so a plain client
/// reaches every key. The docs promise each tenant's keys share a slot through the
/// `{tenant}` hash tag, but an empty tag (`{}`: tenant `""`, or a tenant starting
/// with `}`) makes Redis hash the whole key: the token and its `:replaced` list land
/// in different slots and every script fails with CROSSSLOT.
#[tokio::test]
async fn every_tenant_s_keys_share_a_hash_slot() {
    let directory = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--cluster-enabled", "yes", "--appendonly", "no"])
        .arg("--dir")
        .arg(directory.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let _kill = Kill(server);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let url = format!("redis://127.0.0.1:{port}/");
    let mut connection = None;
    for _ in 0..200 {
        if let Ok(client) = redis::Client::open(url.as_str()) {
            if let Ok(c) = client.get_multiplexed_async_connection().await {
                connection = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut connection = connection.expect("the cluster node answers");
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut connection)
        .await
        .unwrap();
    for _ in 0..200 {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut connection)
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = RedisStore::connect(&url).await.unwrap();
    let t0 = token("a0", Some("r0"), 1_700_000_000);
    let t1 = token("a1", Some("r1"), 1_700_000_001);
    // A normal tenant works on this server.
    let normal = "acme".to_owned();
    store.save(&normal, &t0, None).await.unwrap();
    store.save(&normal, &t1, Some(&t0)).await.unwrap();
    let mut failures = Vec::new();
    for tenant in ["", "}acme"] {
        let tenant = tenant.to_owned();
        if let Err(error) = store.save(&tenant, &t0, None).await {
            failures.push(format!(
                "{tenant:?}: save: {error} ({:?})",
                std::error::Error::source(&error).map(ToString::to_string)
            ));
        }
        if let Err(error) = store.begin_refresh(&tenant, Some(&t0)).await {
            failures.push(format!(
                "{tenant:?}: begin_refresh: {error} ({:?})",
                std::error::Error::source(&error).map(ToString::to_string)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ------------------------------------------------- 9. refusal, huge values

/// A refused refresh token blocks only itself: a new authorization's pair gets its
/// turn at once.
#[tokio::test]
async fn a_new_pair_after_a_refusal_gets_its_turn_at_once() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let key = KEY.to_owned();
    let t0 = token("a0", Some("r0"), 1_700_000_000);
    store.save(&key, &t0, None).await.unwrap();
    let RefreshTurn::Go(Some(lease)) = store.begin_refresh(&key, Some(&t0)).await.unwrap() else {
        panic!("the lease");
    };
    lease.end(RefreshOutcome::Refused).await;
    assert!(matches!(
        store.begin_refresh(&key, Some(&t0)).await.unwrap(),
        RefreshTurn::PeerRefused
    ));
    let fresh = token("n1", Some("nr1"), 1_700_000_000);
    store.save(&key, &fresh, None).await.unwrap();
    let turn = store.begin_refresh(&key, Some(&fresh)).await.unwrap();
    assert!(matches!(turn, RefreshTurn::Go(Some(_))), "{turn:?}");
}

/// Tokens of a few megabytes (Procore says: unbounded length) save, compare and
/// take turns.
#[tokio::test]
async fn huge_tokens_work() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let key = KEY.to_owned();
    let big = "x".repeat(4 << 20);
    let t0 = token(
        &format!("a0{big}"),
        Some(&format!("r0{big}")),
        1_700_000_000,
    );
    let t1 = token(
        &format!("a1{big}"),
        Some(&format!("r1{big}")),
        1_700_000_000,
    );
    store.save(&key, &t0, None).await.unwrap();
    store.save(&key, &t1, Some(&t0)).await.unwrap();
    assert!(store
        .load(&key)
        .await
        .unwrap()
        .unwrap()
        .same_credentials(&t1));
    assert!(matches!(
        store.begin_refresh(&key, Some(&t0)).await.unwrap(),
        RefreshTurn::PeerSaved
    ));
}

// ---------------------------------------- 10. slow holder, Redis restart mid-refresh

/// The holder's token call takes 3 s, six lease TTLs (500 ms): the keeper extends the
/// lease, the peer waits and adopts; nothing is presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_slower_than_its_lease_ttl_keeps_it() {
    let emulator = Emulator::builder()
        .latency(Route::Token, Duration::from_millis(3000))
        .start()
        .await;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let knobs = || Knobs {
        lease_ttl: Some(Duration::from_millis(500)),
        ..Knobs::default()
    };
    let holder = replica(&emulator, &url, knobs()).await;
    holder.set_token(user_token(&emulator).await).await.unwrap();
    let peer = replica(&emulator, &url, knobs()).await;
    let holder_generation = holder.bearer().await.unwrap().generation();
    let peer_generation = peer.bearer().await.unwrap().generation();
    emulator.expire_all_tokens();
    let refreshing = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.rejected(holder_generation).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let peer_result = peer.rejected(peer_generation).await;
    let holder_result = refreshing.await.unwrap();
    let stats = emulator.stats();
    assert_eq!(
        stats.refresh_token_grants, 1,
        "{peer_result:?} {holder_result:?}"
    );
    assert_eq!(stats.failed_token_calls, 0);
    assert!(holder
        .token()
        .unwrap()
        .same_credentials(&peer.token().unwrap()));
}

/// Redis (AOF on, `appendfsync always`: nothing lost) is restarted while the holder's
/// refresh call is in flight (a routine restart, an upgrade, a failover). Its lease
/// survives on disk. After the restart the connection manager fails the first command
/// on each connection while it reconnects: when that command is the holder's SAVE,
/// the rotated pair is never stored (the store keeps the burnt T0) although Redis
/// was back long before the answer arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_during_a_refresh_loses_nothing() {
    let emulator = Emulator::builder()
        .latency(Route::Token, Duration::from_millis(1500))
        .start()
        .await;
    let mut redis = RedisServer::builder().append_only(true).start().unwrap();
    let url = redis.url();
    let holder = replica(&emulator, &url, Knobs::default()).await;
    holder.set_token(user_token(&emulator).await).await.unwrap();
    let peer = replica(&emulator, &url, Knobs::default()).await;
    let holder_generation = holder.bearer().await.unwrap().generation();
    let peer_generation = peer.bearer().await.unwrap().generation();
    emulator.expire_all_tokens();
    let refreshing = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.rejected(holder_generation).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while emulator.stats().refresh_token_grants == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.restart().unwrap();
    let restarted = tokio::time::Instant::now();
    let held = refreshing.await.unwrap();
    let answered_after_restart = restarted.elapsed();
    let holder_pair = holder.token().unwrap();
    let stored = RedisStore::connect(&url).await.unwrap().for_key(KEY);
    let stored = procore_auth_core::TokenStore::load(&stored)
        .await
        .unwrap()
        .unwrap();
    let last_store_error = holder.last_store_error();
    // And what a peer then does:
    let mut peer_result = peer.rejected(peer_generation).await;
    for _ in 0..80 {
        match &peer_result {
            Err(AuthError::Store(error)) if error.is_transient() => {}
            Err(AuthError::BackingOff { .. }) => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        peer_result = peer.rejected(peer_generation).await;
    }
    let stats = emulator.stats();
    assert!(
        stored.same_credentials(&holder_pair) && stats.failed_token_calls == 0,
        "Redis was back {answered_after_restart:?} before the holder's answer, yet its pair \
         was not saved (store holds the holder's pair: {}; holder's result {held:?}, its last \
         store error {last_store_error:?}); then the peer: {peer_result:?}, {} failed token \
         calls",
        stored.same_credentials(&holder_pair),
        stats.failed_token_calls
    );
}
