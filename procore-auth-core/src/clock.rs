//! Injectable time.
//!
//! Every expiry decision is a pure function of a deadline and "now", and "now" comes
//! from a [`Clock`]. Tests use [`ManualClock`]; everything else uses [`SystemClock`].
//!
//! The hot path must not read the system clock (a `SystemTime::now()` costs about as
//! much as the rest of [`TokenManager::bearer`](crate::TokenManager::bearer)), so a
//! clock also exposes a [`CoarseTime`]: an atomic millisecond reading that something
//! else keeps current and that readers load with one relaxed atomic read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
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
    /// the Unix epoch, that may lag it by a short, bounded time.
    fn coarse(&self) -> CoarseTime;
}

/// A millisecond wall-clock reading that is cheap to read and is kept current by its
/// owner (the [`SystemClock`] ticker thread, or [`ManualClock`] when it is moved).
#[derive(Clone, Debug, Default)]
pub struct CoarseTime(Arc<AtomicU64>);

impl CoarseTime {
    /// A reading fixed at `time` until [`set`](Self::set) is called.
    pub fn new(time: SystemTime) -> Self {
        let coarse = Self::default();
        coarse.set(time);
        coarse
    }

    /// Milliseconds since the Unix epoch at the last update.
    #[inline]
    pub fn millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Updates the reading.
    pub fn set(&self, time: SystemTime) {
        self.0.store(unix_millis(time), Ordering::Relaxed);
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
/// Its [`coarse`](Clock::coarse) reading is shared by the whole process and updated
/// every [`COARSE_TICK`] by one background thread, started the first time it is asked
/// for. That thread only sleeps and stores an integer.
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

    fn coarse(&self) -> CoarseTime {
        static COARSE: OnceLock<CoarseTime> = OnceLock::new();
        COARSE
            .get_or_init(|| {
                let coarse = CoarseTime::new(SystemClock.now());
                let ticking = coarse.clone();
                let spawned = std::thread::Builder::new()
                    .name("procore-auth-clock".into())
                    .spawn(move || loop {
                        std::thread::sleep(COARSE_TICK);
                        ticking.set(SystemClock.now());
                    });
                if let Err(error) = spawned {
                    // Without the ticker the coarse reading would stay frozen and tokens
                    // would look fresh forever; a reading of 'far future' makes every
                    // call take the precise slow path instead.
                    tracing::error!(%error, "could not start the coarse clock thread");
                    coarse.0.store(u64::MAX, Ordering::Relaxed);
                }
                coarse
            })
            .clone()
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
        let precise = unix_millis(SystemClock.now());
        let lag = precise.saturating_sub(coarse.millis());
        // Generous bound: a loaded CI machine can delay the ticker thread.
        assert!(lag < 5_000, "coarse clock lags by {lag} ms");
    }
}
