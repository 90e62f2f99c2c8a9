//! Adversarial tests of the lazily started coarse clock (commit bfee7b7): the system
//! clock's process-wide coarse reading is `u64::MAX` until a manager's first token read
//! starts the `procore-auth-clock` thread.
//!
//! That state is process-wide and set once, so every observation of "the first read in
//! a process" runs in a fresh child process: each `parent_*` test re-runs this test
//! binary with `--exact child_* --ignored`, and the child does its work only when
//! `ADVERSARIAL_CLOCK_CHILD` is set (so `cargo test -- --ignored` alone is harmless).
//! The parent tests themselves never touch a clock.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use procore_auth_core::{
    AccessToken, Authorize, BoxFuture, Clock, Environment, Error, ManualClock, RateLimitPolicy,
    RefreshToken, RequestPolicy, SystemClock, Token, TokenManager, TokenSource, COARSE_TICK,
    X_RATE_LIMIT_LIMIT, X_RATE_LIMIT_REMAINING, X_RATE_LIMIT_RESET,
};

const CHILD: &str = "ADVERSARIAL_CLOCK_CHILD";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// Runs the ignored test `name` of this binary alone in a fresh process; panics with
/// its output unless it passed (and actually ran).
fn run_child(name: &str) {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed") && stdout.contains("CHILD-RAN"),
        "child {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Whether this is a child run (otherwise the child test returns at once).
fn is_child() -> bool {
    if std::env::var_os(CHILD).is_some() {
        println!("CHILD-RAN");
        true
    } else {
        false
    }
}

/// Threads of this process named `procore-auth-clock` (Linux truncates names to 15
/// bytes: `procore-auth-cl`).
fn ticker_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0; // not Linux: nothing to check
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with("procore-auth-cl"))
        .count()
}

/// Waits (up to 5 s) for the ticker thread count to reach `expected`, then checks it:
/// a spawned thread names itself from inside, so its name shows up a moment late.
fn assert_ticker_threads(expected: usize) {
    for _ in 0..1_000 {
        if ticker_threads() == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Stay a little longer: a second ticker would also appear late.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ticker_threads(), expected, "procore-auth-clock threads");
}

fn is_linux() -> bool {
    std::path::Path::new("/proc/self/task").exists()
}

/// Mints `minted-<n>` tokens that live 90 minutes from the clock's now.
#[derive(Debug, Default)]
struct Minting(AtomicUsize);

impl TokenSource for Minting {
    fn fetch<'a>(
        &'a self,
        _: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(token(&format!("minted-{n}"), clock.now(), Some(5400))) })
    }
}

/// A token issued at `issued` that lives `life` seconds (`None`: no expiry).
fn token(name: &str, issued: SystemTime, life: Option<u64>) -> Token {
    Token::new(
        AccessToken::new(format!("AT-{name}")),
        Some(RefreshToken::new(format!("RT-{name}"))),
        issued,
        life.map(|life| issued + Duration::from_secs(life)),
    )
    .unwrap()
}

fn system_manager(initial: Token, policy: RateLimitPolicy) -> TokenManager {
    TokenManager::builder(Minting::default())
        .request_policy(RequestPolicy::new(&Environment::production()))
        .token(initial)
        .rate_limit(policy)
        .build()
}

fn header_of(bearer: &procore_auth_core::Bearer) -> String {
    format!("{bearer:?}")
}

fn expect_header(bearer: Option<procore_auth_core::Bearer>, name: &str) {
    let bearer = bearer.unwrap_or_else(|| panic!("no bearer, expected AT-{name}"));
    let token = bearer.header_value().to_str().unwrap().to_owned();
    assert_eq!(token, format!("Bearer AT-{name}"), "{}", header_of(&bearer));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn api() -> Uri {
    "https://api.procore.com/rest/v1.0/me".parse().unwrap()
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Asserts the process-wide coarse reading is a real time close to now.
fn assert_coarse_current() {
    let coarse = SystemClock.coarse().millis();
    assert_ne!(coarse, u64::MAX, "the coarse reading is not kept current");
    let precise = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        precise.abs_diff(coarse) < 5_000,
        "coarse {coarse} vs precise {precise}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. The very first read in a process, on a fresh token
// ---------------------------------------------------------------------------------------

#[test]
fn parent_first_fresh_bearer_on_a_fresh_token() {
    run_child("child_first_fresh_bearer_on_a_fresh_token");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_fresh_bearer_on_a_fresh_token() {
    if !is_child() {
        return;
    }
    assert_eq!(ticker_threads(), 0, "a ticker before anything ran");
    assert_eq!(SystemClock.coarse().millis(), u64::MAX);
    let manager = system_manager(
        token("fresh", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    assert_eq!(ticker_threads(), 0, "building a manager started the ticker");

    expect_header(manager.fresh_bearer(), "fresh");
    if is_linux() {
        assert_ticker_threads(1);
    }
    assert_coarse_current();
    // And later reads (after the ticker has ticked a few times) stay fresh.
    std::thread::sleep(COARSE_TICK * 3);
    expect_header(manager.fresh_bearer(), "fresh");
    expect_header(manager.bearer().now_or_never().unwrap().ok(), "fresh");
    assert_coarse_current();
    if is_linux() {
        assert_ticker_threads(1);
    }
}

#[test]
fn parent_first_bearer_on_a_fresh_token() {
    run_child("child_first_bearer_on_a_fresh_token");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_bearer_on_a_fresh_token() {
    if !is_child() {
        return;
    }
    let manager = system_manager(
        token("fresh", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    assert_eq!(ticker_threads(), 0);
    // Ready at once: no refresh, no waiting.
    let first = manager
        .bearer()
        .now_or_never()
        .expect("the first bearer() waited");
    expect_header(first.ok(), "fresh");
    assert_eq!(
        manager.metrics().refreshes,
        0,
        "a fresh token was refreshed"
    );
    if is_linux() {
        assert_ticker_threads(1);
    }
    assert_coarse_current();
    expect_header(manager.fresh_bearer(), "fresh");
}

/// A token with no expiry is published with a refresh-at of `u64::MAX`, the same value
/// as the not-ticking reading: `u64::MAX < u64::MAX` is false on the first load.
#[test]
fn parent_first_fresh_bearer_on_a_token_without_expiry() {
    run_child("child_first_fresh_bearer_on_a_token_without_expiry");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_fresh_bearer_on_a_token_without_expiry() {
    if !is_child() {
        return;
    }
    let manager = system_manager(
        token("forever", SystemClock.now(), None),
        RateLimitPolicy::Observe,
    );
    expect_header(manager.fresh_bearer(), "forever");
    expect_header(manager.fresh_bearer(), "forever");
    expect_header(manager.bearer().now_or_never().unwrap().ok(), "forever");
    assert_eq!(manager.metrics().refreshes, 0);
}

// ---------------------------------------------------------------------------------------
// 2. The very first read in a process, on an expired / due token
// ---------------------------------------------------------------------------------------

#[test]
fn parent_first_read_on_an_expired_token() {
    run_child("child_first_read_on_an_expired_token");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_read_on_an_expired_token() {
    if !is_child() {
        return;
    }
    let issued = SystemClock.now() - Duration::from_secs(7200);
    let manager = system_manager(token("stale", issued, Some(5400)), RateLimitPolicy::Observe);
    assert!(
        manager.fresh_bearer().is_none(),
        "an expired token looked fresh"
    );
    // The read started the ticker; the token still does not look fresh.
    assert_coarse_current();
    assert!(
        manager.fresh_bearer().is_none(),
        "an expired token looked fresh"
    );
    std::thread::sleep(COARSE_TICK * 2);
    assert!(
        manager.fresh_bearer().is_none(),
        "an expired token looked fresh"
    );

    let rt = runtime();
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), manager.bearer()).await })
        .expect("the refresh hung")
        .expect("the refresh failed");
    assert_eq!(got.header_value().to_str().unwrap(), "Bearer AT-minted-1");
    expect_header(manager.fresh_bearer(), "minted-1");
    if is_linux() {
        assert_ticker_threads(1);
    }
}

/// The first read is `bearer()` (the slow path `decide` starts the ticker).
#[test]
fn parent_first_bearer_on_an_expired_token() {
    run_child("child_first_bearer_on_an_expired_token");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_bearer_on_an_expired_token() {
    if !is_child() {
        return;
    }
    let issued = SystemClock.now() - Duration::from_secs(7200);
    let manager = system_manager(token("stale", issued, Some(5400)), RateLimitPolicy::Observe);
    let rt = runtime();
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), manager.bearer()).await })
        .expect("the refresh hung")
        .expect("the refresh failed");
    assert_eq!(got.header_value().to_str().unwrap(), "Bearer AT-minted-1");
    assert_coarse_current();
    expect_header(manager.fresh_bearer(), "minted-1");
    if is_linux() {
        assert_ticker_threads(1);
    }
}

/// A token inside the refresh skew (due, not expired) must not look fresh on the
/// first read either.
#[test]
fn parent_first_fresh_bearer_on_a_due_token() {
    run_child("child_first_fresh_bearer_on_a_due_token");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_first_fresh_bearer_on_a_due_token() {
    if !is_child() {
        return;
    }
    // 90-minute token issued 88 minutes ago: inside the 5-minute default skew.
    let issued = SystemClock.now() - Duration::from_secs(88 * 60);
    let manager = system_manager(token("due", issued, Some(5400)), RateLimitPolicy::Observe);
    assert!(manager.fresh_bearer().is_none(), "a due token looked fresh");
    assert!(manager.fresh_bearer().is_none(), "a due token looked fresh");
    assert_coarse_current();
}

// ---------------------------------------------------------------------------------------
// 3. A manager that is built and never read starts no thread
// ---------------------------------------------------------------------------------------

#[test]
fn parent_a_manager_never_read_starts_no_thread() {
    run_child("child_a_manager_never_read_starts_no_thread");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_a_manager_never_read_starts_no_thread() {
    if !is_child() || !is_linux() {
        return;
    }
    let managers: Vec<TokenManager> = (0..4)
        .map(|i| {
            system_manager(
                token(&format!("idle-{i}"), SystemClock.now(), Some(5400)),
                RateLimitPolicy::Wait {
                    max_wait: Duration::from_secs(1),
                },
            )
        })
        .collect();
    let _empty = TokenManager::builder(Minting::default()).build();
    for manager in &managers {
        let _ = manager.metrics();
        let _ = manager.rate_limit();
        let _ = manager.policy();
        let _ = manager.clone();
    }
    let _ = SystemClock.coarse();
    let _ = SystemClock.now();
    std::thread::sleep(COARSE_TICK * 2);
    assert_eq!(ticker_threads(), 0, "a ticker with no token read");
    assert_eq!(SystemClock.coarse().millis(), u64::MAX);
}

// ---------------------------------------------------------------------------------------
// 4. Many threads doing their first read at once
// ---------------------------------------------------------------------------------------

/// Each child run is a fresh process whose first reads race; repeated to widen the
/// window. Was broken before 25aebc8 (about 1 child in 20 here): a thread whose first load
/// in `fresh_bearer` sees `u64::MAX`, and whose second load in the cold path
/// `fresh_bearer_first` sees the value another thread's ticker start just stored,
/// returns `None` ("the token is due") for a fresh token, without re-reading the cell.
#[test]
fn parent_concurrent_first_fresh_bearer_reads() {
    for _ in 0..100 {
        run_child("child_concurrent_first_fresh_bearer_reads");
    }
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_concurrent_first_fresh_bearer_reads() {
    if !is_child() {
        return;
    }
    const THREADS: usize = 32;
    let manager = system_manager(
        token("fresh", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let misses = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (manager, barrier, misses) = (manager.clone(), barrier.clone(), misses.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Spin a little, differently per thread, to spread the first loads
                // across the ticker's start.
                for _ in 0..(i * 50) {
                    std::hint::spin_loop();
                }
                match manager.fresh_bearer() {
                    Some(bearer) => {
                        assert_eq!(bearer.header_value().to_str().unwrap(), "Bearer AT-fresh")
                    }
                    None => {
                        misses.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a reader panicked");
    }
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "fresh_bearer() returned None for a fresh token on a concurrent first read"
    );
    if is_linux() {
        assert_ticker_threads(1);
    }
    assert_coarse_current();
}

/// The same with `bearer()`, which must be ready at once for every thread and never
/// refresh the fresh token.
#[test]
fn parent_concurrent_first_bearer_reads() {
    for _ in 0..10 {
        run_child("child_concurrent_first_bearer_reads");
    }
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_concurrent_first_bearer_reads() {
    if !is_child() {
        return;
    }
    const THREADS: usize = 32;
    let manager = system_manager(
        token("fresh", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let bearer = if i % 2 == 0 {
                    manager
                        .bearer()
                        .now_or_never()
                        .expect("bearer() waited")
                        .ok()
                } else {
                    manager.fresh_bearer().or_else(|| {
                        manager
                            .bearer()
                            .now_or_never()
                            .expect("bearer() waited")
                            .ok()
                    })
                };
                assert_eq!(
                    bearer.expect("no bearer").header_value().to_str().unwrap(),
                    "Bearer AT-fresh"
                );
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a reader panicked");
    }
    assert_eq!(
        manager.metrics().refreshes,
        0,
        "a fresh token was refreshed"
    );
    if is_linux() {
        assert_ticker_threads(1);
    }
    assert_coarse_current();
}

// ---------------------------------------------------------------------------------------
// 5. Rate-limit recording on the very first response (Observe)
// ---------------------------------------------------------------------------------------

fn report(limit: u64, remaining: u64, reset: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(X_RATE_LIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(X_RATE_LIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(X_RATE_LIMIT_RESET, HeaderValue::from(reset));
    headers
}

#[test]
fn parent_observe_records_the_first_response() {
    run_child("child_observe_records_the_first_response");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_observe_records_the_first_response() {
    if !is_child() {
        return;
    }
    let manager = system_manager(
        token("fresh", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    let Authorize::Ready(authorized) = manager.authorize(&api(), &HeaderMap::new()) else {
        panic!("the first authorize was not ready");
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    let now = unix_secs(SystemClock.now());
    assert!(attached
        .judge(StatusCode::OK, &report(3600, 41, now + 600))
        .is_none());
    let budget = manager
        .rate_limit()
        .expect("the first report was not recorded");
    assert_eq!((budget.limit, budget.remaining), (3600, 41));
    assert_eq!(unix_secs(budget.reset_at), now + 600);
    assert_eq!(manager.metrics().rate_limit_headers_ignored, 0);

    // A reset already past by our clock (first report for another manager): spent for
    // about a second from *now*, not from some far-off time, and not refused as absurd.
    let manager = system_manager(
        token("other", SystemClock.now(), Some(5400)),
        RateLimitPolicy::Observe,
    );
    let Authorize::Ready(authorized) = manager.authorize(&api(), &HeaderMap::new()) else {
        panic!("not ready");
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    let now = unix_secs(SystemClock.now());
    assert!(attached
        .judge(StatusCode::OK, &report(3600, 0, now - 5))
        .is_none());
    let budget = manager
        .rate_limit()
        .expect("the second report was not recorded");
    assert_eq!(budget.remaining, 0);
    let reset = unix_secs(budget.reset_at);
    assert!(
        (now..=now + 3).contains(&reset),
        "a past reset became {reset} (now {now})"
    );
    assert_eq!(manager.metrics().rate_limit_headers_ignored, 0);
}

/// The first read is a refresh (no token at all), and the first response is recorded
/// right after it.
#[test]
fn parent_observe_records_the_first_response_after_a_refresh() {
    run_child("child_observe_records_the_first_response_after_a_refresh");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_observe_records_the_first_response_after_a_refresh() {
    if !is_child() {
        return;
    }
    let manager = TokenManager::builder(Minting::default())
        .request_policy(RequestPolicy::new(&Environment::production()))
        .rate_limit(RateLimitPolicy::Observe)
        .build();
    let rt = runtime();
    let authorized = match manager.authorize(&api(), &HeaderMap::new()) {
        Authorize::Ready(authorized) => authorized,
        Authorize::Pending(waiting) => rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), waiting).await })
            .expect("hung")
            .expect("failed"),
        Authorize::Skip => panic!("skipped"),
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    let now = unix_secs(SystemClock.now());
    assert!(attached
        .judge(StatusCode::OK, &report(3600, 7, now - 100))
        .is_none());
    let budget = manager
        .rate_limit()
        .expect("the first report was not recorded");
    assert_eq!(budget.limit, 3600);
    let reset = unix_secs(budget.reset_at);
    assert!((now..=now + 3).contains(&reset), "reset {reset}, now {now}");
    assert_eq!(manager.metrics().rate_limit_headers_ignored, 0);
}

// ---------------------------------------------------------------------------------------
// 6. Managers on a ManualClock are unaffected
// ---------------------------------------------------------------------------------------

#[test]
fn parent_manual_clock_managers_start_no_thread() {
    run_child("child_manual_clock_managers_start_no_thread");
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_manual_clock_managers_start_no_thread() {
    if !is_child() {
        return;
    }
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let manager = TokenManager::builder(Minting::default())
        .clock(clock.clone())
        .request_policy(RequestPolicy::new(&Environment::production()))
        .token(token("manual", start, Some(5400)))
        .rate_limit(RateLimitPolicy::Observe)
        .build();
    expect_header(manager.fresh_bearer(), "manual");
    expect_header(manager.bearer().now_or_never().unwrap().ok(), "manual");
    let Authorize::Ready(authorized) = manager.authorize(&api(), &HeaderMap::new()) else {
        panic!("not ready");
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    let now = 1_700_000_000;
    assert!(attached
        .judge(StatusCode::OK, &report(3600, 9, now + 60))
        .is_none());
    let budget = manager.rate_limit().unwrap();
    assert_eq!(budget.remaining, 9);
    assert_eq!(unix_secs(budget.reset_at), now + 60);
    // A past reset is judged against the manual clock, not the system one (a second
    // manager on the same clock, whose budget is unknown yet).
    let other = TokenManager::builder(Minting::default())
        .clock(clock.clone())
        .request_policy(RequestPolicy::new(&Environment::production()))
        .token(token("manual-2", start, Some(5400)))
        .build();
    let Authorize::Ready(authorized) = other.authorize(&api(), &HeaderMap::new()) else {
        panic!("not ready");
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    assert!(attached
        .judge(StatusCode::OK, &report(3600, 0, now - 5))
        .is_none());
    assert_eq!(unix_secs(other.rate_limit().unwrap().reset_at), now + 1);

    // Past expiry on the manual clock: not fresh, and refreshed on the manual clock.
    clock.advance(Duration::from_secs(5400));
    assert!(
        manager.fresh_bearer().is_none(),
        "expired on the manual clock but fresh"
    );
    let rt = runtime();
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), manager.bearer()).await })
        .expect("hung")
        .expect("failed");
    assert_eq!(got.header_value().to_str().unwrap(), "Bearer AT-minted-1");
    expect_header(manager.fresh_bearer(), "minted-1");

    assert_eq!(
        ticker_threads(),
        0,
        "a manual-clock manager started the ticker"
    );
    assert_eq!(SystemClock.coarse().millis(), u64::MAX);
}
