//! Injectable time.
//!
//! Every expiry decision is a pure function of a deadline and "now", and "now" comes
//! from a [`Clock`]. Tests use [`ManualClock`]; everything else uses [`SystemClock`].
//!
//! The hot path must not read the system clock (a `SystemTime::now()` costs about as
//! much as the rest of [`TokenManager::bearer`](crate::TokenManager::bearer)), so a
//! clock also exposes a [`CoarseTime`]: an atomic millisecond reading that something
//! else keeps current and that readers load with one relaxed atomic read.
//!
//! For the [`SystemClock`] that something is one background thread per process,
//! `procore-auth-clock`, started by a manager's first token read (token reads check
//! the precise clock while the coarse reading is not kept current yet), not when a
//! manager is built: a program that builds a manager and never uses it starts no thread. Once
//! started it runs until the process exits, waking every [`COARSE_TICK`] to store an
//! integer.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the system clock's coarse reading is brought up to date.
///
/// The coarse reading lags real time by at most this much, so a token is treated as
/// fresh for at most this long after its refresh deadline; the refresh skew is minutes.
pub const COARSE_TICK: Duration = Duration::from_millis(100);

/// A source of wall-clock and monotonic time.
///
/// Token expiry uses wall-clock time on purpose: it is a wall-clock deadline, and a
/// laptop that sleeps for an hour must see its token as expired. Intervals the
/// manager measures itself (back-off, store re-reads) use [`monotonic`](Self::monotonic)
/// time, so a wall clock stepped back by an hour cannot stretch them by an hour.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time, read precisely. Called only off the hot path.
    fn now(&self) -> SystemTime;

    /// Time elapsed since an arbitrary fixed origin; never goes backwards.
    fn monotonic(&self) -> Duration;

    /// A shared, cheaply readable reading of [`now`](Self::now), in milliseconds since
    /// the Unix epoch, that may lag it by a short, bounded time. (The [`SystemClock`]'s
    /// reads `u64::MAX`, later than any deadline, until its ticker thread runs.)
    ///
    /// Called once per manager, when it is built; must not start work of its own (the
    /// [`SystemClock`]'s ticker thread starts with a manager's first token read).
    fn coarse(&self) -> CoarseTime;
}

/// A millisecond wall-clock reading that is cheap to read and is kept current by its
/// owner (the [`SystemClock`] ticker thread, or [`ManualClock`] when it is moved).
///
/// Clones share the reading. A reading made with [`new`](Self::new) or
/// [`default`](Self::default) moves only when [`set`](Self::set) is called.
#[derive(Clone, Debug, Default)]
pub struct CoarseTime(Arc<Reading>);

#[derive(Debug, Default)]
struct Reading {
    /// Milliseconds since the Unix epoch; for the system clock's reading,
    /// [`NOT_TICKING`] until its ticker runs.
    millis: AtomicU64,
    /// `Some` for the system clock's reading, whose ticker a manager starts at its
    /// first token read (see [`CoarseTime::keep_current`]).
    ticker: Option<Ticker>,
}

/// A reading no ticker keeps current (yet): later than any expiry, so every token
/// looks due for a check, which managers make on the precise clock.
pub(crate) const NOT_TICKING: u64 = u64::MAX;

/// The thread that keeps a reading current.
#[derive(Debug, Default)]
struct Ticker {
    /// Set once, when started: the running thread, or `None` if it could not be
    /// spawned (the reading then stays [`NOT_TICKING`]).
    thread: OnceLock<Option<JoinHandle<()>>>,
}

impl CoarseTime {
    /// A reading fixed at `time` until [`set`](Self::set) is called.
    pub fn new(time: SystemTime) -> Self {
        let coarse = Self::default();
        coarse.set(time);
        coarse
    }

    /// The system clock's kind of reading: [`NOT_TICKING`] and no thread until
    /// [`keep_current`](Self::keep_current) starts a ticker thread, which keeps it
    /// current while any clone is alive.
    fn ticking() -> Self {
        Self(Arc::new(Reading {
            millis: AtomicU64::new(NOT_TICKING),
            ticker: Some(Ticker::default()),
        }))
    }

    /// Milliseconds since the Unix epoch at the last update: one relaxed atomic load.
    /// The [`SystemClock`]'s reading is `u64::MAX` until its ticker thread runs.
    #[inline]
    pub fn millis(&self) -> u64 {
        self.0.millis.load(Ordering::Relaxed)
    }

    /// Starts the ticker thread of the system clock's reading unless it runs (or
    /// could not be started); nothing for other readings. Managers call this when a
    /// token read finds the reading `u64::MAX` (every token read starts with that
    /// check): the thread starts with the first token read, not when a manager is
    /// built, and the read path stays one load.
    pub(crate) fn keep_current(&self) {
        if let Some(ticker) = &self.0.ticker {
            ticker.start(&self.0);
        }
    }

    /// Updates the reading. (On the system clock's reading, the ticker overwrites it
    /// within a tick.)
    pub fn set(&self, time: SystemTime) {
        if let Some(ticker) = &self.0.ticker {
            ticker.start(&self.0);
        }
        self.0.millis.store(unix_millis(time), Ordering::Relaxed);
    }

    /// Whether a ticker thread keeps this reading current (for tests).
    #[cfg(test)]
    fn ticking_thread(&self) -> Option<bool> {
        let ticker = self.0.ticker.as_ref()?;
        Some(matches!(ticker.thread.get(), Some(Some(_))))
    }
}

impl Ticker {
    /// Starts the thread unless it was started (or failed to start) already.
    fn start(&self, reading: &Arc<Reading>) {
        self.thread.get_or_init(|| {
            // The thread holds the reading weakly, so that it ends with the last clone;
            // the system clock's reading lives in a static, so its thread never ends.
            let weak: Weak<Reading> = Arc::downgrade(reading);
            let spawned = std::thread::Builder::new()
                .name("procore-auth-clock".into())
                .spawn(move || loop {
                    std::thread::sleep(COARSE_TICK);
                    let Some(reading) = weak.upgrade() else {
                        return;
                    };
                    reading
                        .millis
                        .store(unix_millis(SystemClock.now()), Ordering::Relaxed);
                });
            match spawned {
                Ok(thread) => {
                    reading
                        .millis
                        .store(unix_millis(SystemClock.now()), Ordering::Relaxed);
                    Some(thread)
                }
                Err(error) => {
                    // A reading nobody updates would stay frozen and tokens would look
                    // fresh forever: leave it at `NOT_TICKING`, so that every token
                    // read checks the precise clock instead (correct, only slower).
                    tracing::error!(%error, "could not start the coarse clock thread");
                    None
                }
            }
        });
    }
}

/// Milliseconds since the Unix epoch, saturating at both ends.
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// The operating system's wall clock.
///
/// Its [`coarse`](Clock::coarse) reading is shared by the whole process and kept
/// current by one background thread, `procore-auth-clock`, that wakes every
/// [`COARSE_TICK`] to store an integer. The thread starts with a manager's first token
/// read, not when a manager is built, so a program that builds a manager and never
/// asks it for a token starts no thread; once started, it runs until the process
/// exits. If it cannot be spawned, an error is logged and every token read checks the
/// precise clock instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the real clock
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    #[allow(clippy::disallowed_methods)] // the one place that reads the real clock
    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }

    /// The process-wide reading; starts no thread (a manager's first token read
    /// does).
    fn coarse(&self) -> CoarseTime {
        static COARSE: OnceLock<CoarseTime> = OnceLock::new();
        COARSE.get_or_init(CoarseTime::ticking).clone()
    }
}

/// A clock that only moves when told to. For tests and simulations.
///
/// Clones share the same time. [`advance`](Self::advance) moves the wall clock and the
/// monotonic clock together; [`set`](Self::set) moves only the wall clock, as an NTP
/// step or a user changing the system time would.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<ManualTime>>,
    coarse: CoarseTime,
}

#[derive(Debug)]
struct ManualTime {
    wall: SystemTime,
    monotonic: Duration,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(ManualTime {
                wall: start,
                monotonic: Duration::ZERO,
            })),
            coarse: CoarseTime::new(start),
        }
    }

    /// A clock stopped at the given number of seconds after the Unix epoch.
    pub fn at_unix(seconds: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    /// Moves the wall clock and the monotonic clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.wall += by;
        now.monotonic += by;
        self.coarse.set(now.wall);
    }

    /// Sets the wall clock to `time` (which may be in the past); the monotonic clock
    /// does not move.
    pub fn set(&self, time: SystemTime) {
        let mut now = self.lock();
        now.wall = time;
        self.coarse.set(time);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualTime> {
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().wall
    }

    fn monotonic(&self) -> Duration {
        self.lock().monotonic
    }

    fn coarse(&self) -> CoarseTime {
        self.coarse.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_precise_and_coarse_readings_together() {
        let clock = ManualClock::at_unix(1_000);
        let coarse = clock.coarse();
        assert_eq!(coarse.millis(), 1_000_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_millis(1_001_500));
        assert_eq!(coarse.millis(), 1_001_500);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        clock.set(UNIX_EPOCH);
        assert_eq!(coarse.millis(), 0);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
    }

    #[test]
    fn system_clock_coarse_reading_is_close_to_now() {
        let coarse = SystemClock.coarse();
        coarse.keep_current();
        let precise = unix_millis(SystemClock.now());
        assert_ne!(coarse.millis(), NOT_TICKING);
        let lag = precise.saturating_sub(coarse.millis());
        // Generous bound: a loaded CI machine can delay the ticker thread.
        assert!(lag < 5_000, "coarse clock lags by {lag} ms");
    }

    #[test]
    fn system_clock_shares_one_lazily_ticking_reading() {
        let (first, second) = (SystemClock.coarse(), SystemClock.coarse());
        assert!(Arc::ptr_eq(&first.0, &second.0));
        assert!(first.ticking_thread().is_some());
    }

    #[test]
    fn manual_readings_have_no_ticker() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let coarse = clock.coarse();
        coarse.keep_current(); // starts nothing
        assert_eq!(coarse.millis(), 0);
        assert_eq!(coarse.ticking_thread(), None);
        assert_eq!(CoarseTime::default().ticking_thread(), None);
        assert_eq!(CoarseTime::default().millis(), 0);
    }

    /// A reading of the system clock's kind, built the way `SystemClock::coarse` builds
    /// its process-wide one (whose state other tests in this process share).
    #[test]
    #[allow(clippy::disallowed_methods)] // waits on a real thread
    fn ticker_starts_when_asked_and_ends_with_the_last_clone() {
        let coarse = CoarseTime::ticking();
        let held_by_a_manager = coarse.clone(); // as `TokenManagerBuilder::build` does
        assert_eq!(
            coarse.ticking_thread(),
            Some(false),
            "started before any read"
        );
        // Not kept current: later than any expiry, so managers check the precise clock.
        assert_eq!(held_by_a_manager.millis(), NOT_TICKING);
        assert_eq!(
            coarse.ticking_thread(),
            Some(false),
            "a read starts nothing"
        );

        let before = unix_millis(SystemClock.now());
        held_by_a_manager.keep_current();
        let first = coarse.millis();
        assert!(
            (before..NOT_TICKING).contains(&first),
            "first reading {first}, precise {before}"
        );
        assert_eq!(coarse.ticking_thread(), Some(true));

        // The thread keeps it current (generous bound for a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(10);
        while coarse.millis() <= first {
            assert!(
                Instant::now() < deadline,
                "the ticker never moved the reading"
            );
            std::thread::sleep(COARSE_TICK / 4);
        }

        // With the last clone gone the thread ends (it holds the reading weakly).
        drop(held_by_a_manager);
        let mut coarse = coarse;
        let reading = loop {
            match Arc::try_unwrap(coarse.0) {
                Ok(reading) => break reading,
                // The thread holds it for an instant while it stores a tick.
                Err(shared) => {
                    coarse = CoarseTime(shared);
                    std::thread::yield_now();
                }
            }
        };
        let thread = reading
            .ticker
            .and_then(|ticker| ticker.thread.into_inner())
            .flatten()
            .expect("the thread was started");
        thread.join().expect("the ticker thread does not panic");
    }

    #[test]
    fn setting_a_ticking_reading_starts_its_ticker() {
        let coarse = CoarseTime::ticking();
        coarse.set(UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(coarse.ticking_thread(), Some(true));
    }

    /// End to end through a manager on the system clock: its very first token read
    /// is served (on the precise clock) and leaves the process-wide ticker running,
    /// after which the fresh token is read without waiting.
    #[test]
    fn a_managers_first_token_read_is_fresh_and_starts_the_system_ticker() {
        use futures_util::FutureExt;

        #[derive(Debug)]
        struct NeverRefreshes;
        impl crate::TokenSource for NeverRefreshes {
            fn fetch<'a>(
                &'a self,
                _: Option<&'a crate::Token>,
                _: &'a dyn Clock,
            ) -> crate::BoxFuture<'a, Result<crate::Token, crate::Error>> {
                Box::pin(std::future::pending())
            }
        }

        let now = SystemClock.now();
        let token = crate::Token::new(
            crate::AccessToken::new("a"),
            None,
            now,
            Some(now + Duration::from_secs(5_400)),
        )
        .expect("a valid token");
        let manager = crate::TokenManager::builder(NeverRefreshes)
            .token(token)
            .build();
        assert!(manager.fresh_bearer().is_some(), "the first read is fresh");
        assert_eq!(SystemClock.coarse().ticking_thread(), Some(true));
        let next = manager.bearer().now_or_never();
        assert!(matches!(next, Some(Ok(_))), "and so are the next");
    }
}
