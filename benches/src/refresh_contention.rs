//! A herd of K tasks finds the token expired at once; the refresh takes a fixed
//! simulated latency, counted from when the herd has been spawned, and ends only once
//! every task of the herd waits for it.
//! Measured: the release, from the moment the (last) refresh completes until the last
//! of the K tasks holds a header. Spawning the tasks is not measured (it costs the
//! same in every design).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use http::HeaderValue;
use procore_auth_core::{
    BoxFuture as CoreBoxFuture, Clock, Error, SystemClock, Token, TokenManager, TokenSource,
};

use crate::{expired_token, fresh_token};

/// The simulated token-endpoint round trip.
pub const REFRESH_LATENCY: Duration = Duration::from_millis(10);

/// A way of sharing one token among the herd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// `TokenManager`: single-flight refresh, lock-free reads.
    Manager,
    /// Reference: one `futures::Shared` refresh per generation behind a mutex.
    SharedPerGeneration,
    /// `tokio::sync::Mutex<Token>`, refreshing while holding the lock.
    NaiveMutex,
    /// `tokio::sync::RwLock<Arc<Token>>`, every reader that sees it stale refreshes.
    NaiveRwLock,
}

impl Design {
    /// Every design.
    pub const ALL: [Design; 4] = [
        Design::SharedPerGeneration,
        Design::Manager,
        Design::NaiveMutex,
        Design::NaiveRwLock,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Design::Manager => "TokenManager",
            Design::SharedPerGeneration => "futures::Shared per generation",
            Design::NaiveMutex => "naive tokio Mutex<Token>",
            Design::NaiveRwLock => "naive RwLock, no single-flight",
        }
    }

    /// Whether the herd shares one refresh: its tasks are then polled twice each,
    /// once to wait and once when released.
    pub fn single_flight(self) -> bool {
        matches!(self, Design::Manager | Design::SharedPerGeneration)
    }

    /// The token calls a herd of `tasks` makes: one, but one per task without
    /// single flight (every task sees the token stale before any refresh ends).
    pub fn token_calls(self, tasks: usize) -> u64 {
        match self {
            Design::Manager | Design::SharedPerGeneration | Design::NaiveMutex => 1,
            Design::NaiveRwLock => tasks as u64,
        }
    }
}

/// What one herd cost.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// From the end of the last refresh until the last task held a header.
    pub release: Duration,
    /// Token-endpoint calls made.
    pub token_calls: u64,
    /// Tasks whose first poll did not give them a header (all, in a herd).
    pub waited: usize,
    /// Polls of the tasks' futures: twice per task when each is woken once, on
    /// release (the single-flight designs).
    pub polls: u64,
}

/// Counts token calls and timestamps the end of refreshes and of tasks.
#[derive(Debug)]
struct Herd {
    epoch: Instant,
    calls: AtomicU64,
    /// Nanoseconds after `epoch`.
    last_refresh_done: AtomicU64,
    last_task_done: AtomicU64,
    /// The herd's size, how many of its tasks have been polled once, and how many of
    /// those had to wait.
    tasks: usize,
    polled: AtomicUsize,
    waited: AtomicUsize,
    polls: AtomicU64,
    /// Set when every task has been polled once.
    all_polled: tokio::sync::watch::Sender<bool>,
    /// The end of the simulated round trip, opened [`REFRESH_LATENCY`] after the
    /// herd is spawned and once all of it waits (see [`Herd::refresh`]).
    gate: tokio::sync::watch::Sender<bool>,
}

impl Herd {
    fn new(tasks: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            calls: AtomicU64::new(0),
            last_refresh_done: AtomicU64::new(0),
            last_task_done: AtomicU64::new(0),
            tasks,
            polled: AtomicUsize::new(0),
            waited: AtomicUsize::new(0),
            polls: AtomicU64::new(0),
            all_polled: tokio::sync::watch::Sender::new(tasks == 0),
            gate: tokio::sync::watch::Sender::new(false),
        })
    }

    /// A task of the herd has been polled once: it found the token stale and waits
    /// (or holds a header, for the floor).
    fn polled_once(&self, waits: bool) {
        if waits {
            self.waited.fetch_add(1, Ordering::Relaxed);
        }
        if self.polled.fetch_add(1, Ordering::AcqRel) + 1 == self.tasks {
            self.all_polled.send_replace(true);
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Simulates the token endpoint: counts the call, waits for the round trip's end
    /// (the gate, opened by [`join_all`]).
    ///
    /// The wait is one wake-up: the single-flight designs share this future among
    /// the waiters (`Shared` wakes all of them whenever it is woken), so a refresh
    /// woken more than once (a timer firing while the herd is still being spawned,
    /// as under valgrind, where spawning 10 000 tasks outlasts any short latency)
    /// would poll every waiter more than twice.
    async fn refresh(&self) -> Token {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.gate
            .subscribe()
            .wait_for(|open| *open)
            .await
            .expect("the herd holds the sender");
        let token = fresh_token("herd");
        self.last_refresh_done
            .fetch_max(self.now(), Ordering::Relaxed);
        token
    }

    fn task_done(&self, header: HeaderValue) {
        std::hint::black_box(header);
        self.last_task_done.fetch_max(self.now(), Ordering::Relaxed);
    }

    fn outcome(&self) -> Outcome {
        let done = self.last_task_done.load(Ordering::Relaxed);
        let refreshed = self.last_refresh_done.load(Ordering::Relaxed);
        Outcome {
            release: Duration::from_nanos(done.saturating_sub(refreshed)),
            token_calls: self.calls.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct SlowSource {
    herd: Arc<Herd>,
}

impl TokenSource for SlowSource {
    fn fetch<'a>(
        &'a self,
        _: Option<&'a Token>,
        _: &'a dyn Clock,
    ) -> CoreBoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move { Ok(self.herd.refresh().await) })
    }
}

type SharedHeader = Shared<BoxFuture<'static, HeaderValue>>;

/// The reference design: the smallest correct single-flight cache.
struct SharedPerGeneration {
    token: ArcSwap<Option<Token>>,
    inflight: Mutex<Option<SharedHeader>>,
    herd: Arc<Herd>,
}

impl SharedPerGeneration {
    async fn header(self: &Arc<Self>) -> HeaderValue {
        if let Some(token) = &**self.token.load() {
            if !token.is_expired_at(SystemClock.now()) {
                return token
                    .header_value()
                    .expect("bench tokens have an access token")
                    .clone();
            }
        }
        let refresh = {
            let mut inflight = self.inflight.lock().expect("never poisoned");
            if let Some(token) = &**self.token.load() {
                if !token.is_expired_at(SystemClock.now()) {
                    return token
                        .header_value()
                        .expect("bench tokens have an access token")
                        .clone();
                }
            }
            inflight
                .get_or_insert_with(|| {
                    let this = Arc::clone(self);
                    async move {
                        let token = this.herd.refresh().await;
                        let header = token
                            .header_value()
                            .expect("bench tokens have an access token")
                            .clone();
                        this.token.store(Arc::new(Some(token)));
                        *this.inflight.lock().expect("never poisoned") = None;
                        header
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        refresh.await
    }
}

/// Runs one herd of `tasks` on `runtime`.
pub fn run(runtime: &tokio::runtime::Runtime, design: Design, tasks: usize) -> Outcome {
    let herd = Herd::new(tasks);
    runtime.block_on(async {
        match design {
            Design::Manager => {
                let manager = TokenManager::builder(SlowSource {
                    herd: Arc::clone(&herd),
                })
                .token(expired_token("herd"))
                .build();
                join_all(&herd, tasks, move || {
                    let manager = manager.clone();
                    async move {
                        let bearer = manager.bearer().await.expect("refresh succeeds");
                        bearer.into_header_value()
                    }
                })
                .await;
            }
            Design::SharedPerGeneration => {
                let cache = Arc::new(SharedPerGeneration {
                    token: ArcSwap::from_pointee(Some(expired_token("herd"))),
                    inflight: Mutex::default(),
                    herd: Arc::clone(&herd),
                });
                join_all(&herd, tasks, move || {
                    let cache = Arc::clone(&cache);
                    async move { cache.header().await }
                })
                .await;
            }
            Design::NaiveMutex => {
                let token = Arc::new(tokio::sync::Mutex::new(expired_token("herd")));
                let refresher = Arc::clone(&herd);
                join_all(&herd, tasks, move || {
                    let (token, herd) = (Arc::clone(&token), Arc::clone(&refresher));
                    async move {
                        let mut token = token.lock().await;
                        if token.is_expired_at(SystemClock.now()) {
                            *token = herd.refresh().await;
                        }
                        token
                            .header_value()
                            .expect("bench tokens have an access token")
                            .clone()
                    }
                })
                .await;
            }
            Design::NaiveRwLock => {
                let token = Arc::new(tokio::sync::RwLock::new(Arc::new(expired_token("herd"))));
                let refresher = Arc::clone(&herd);
                join_all(&herd, tasks, move || {
                    let (token, herd) = (Arc::clone(&token), Arc::clone(&refresher));
                    async move {
                        let current = Arc::clone(&*token.read().await);
                        if !current.is_expired_at(SystemClock.now()) {
                            return current
                                .header_value()
                                .expect("bench tokens have an access token")
                                .clone();
                        }
                        let fresh = Arc::new(herd.refresh().await);
                        *token.write().await = Arc::clone(&fresh);
                        fresh
                            .header_value()
                            .expect("bench tokens have an access token")
                            .clone()
                    }
                })
                .await;
            }
        }
    });
    herd.outcome()
}

/// The floor under every design's herd of `tasks`: the same tasks spawned and joined
/// (polled once, timestamped), each cloning the header of a fresh token at once. No
/// refresh, no waiting; its [`Outcome`] has no release to speak of.
pub fn run_floor(runtime: &tokio::runtime::Runtime, tasks: usize) -> Outcome {
    let herd = Herd::new(tasks);
    runtime.block_on(async {
        let token = Arc::new(fresh_token("herd"));
        join_all(&herd, tasks, move || {
            let token = Arc::clone(&token);
            async move {
                token
                    .header_value()
                    .expect("bench tokens have an access token")
                    .clone()
            }
        })
        .await;
    });
    herd.outcome()
}

async fn join_all<F, Fut>(herd: &Arc<Herd>, tasks: usize, make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = HeaderValue> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (herd, task) = (Arc::clone(herd), make());
            tokio::spawn(async move {
                let mut task = std::pin::pin!(task);
                let mut first = true;
                let header = std::future::poll_fn(|cx| {
                    herd.polls.fetch_add(1, Ordering::Relaxed);
                    let polled = task.as_mut().poll(cx);
                    if std::mem::take(&mut first) {
                        herd.polled_once(polled.is_pending());
                    }
                    polled
                })
                .await;
                herd.task_done(header)
            })
        })
        .collect();
    // The round trip: the latency, and however long the herd takes to wait.
    tokio::time::sleep(REFRESH_LATENCY).await;
    herd.all_polled
        .subscribe()
        .wait_for(|all| *all)
        .await
        .expect("the herd holds the sender");
    herd.gate.send_replace(true);
    for handle in handles {
        handle.await.expect("herd tasks do not panic");
    }
}

/// The multi-thread runtime the herds run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every herd makes the token calls its design makes (one for the single-flight
    /// designs), and every task of it waits for the refresh and is woken.
    #[test]
    fn every_herd_makes_its_designs_token_calls() {
        let runtime = runtime();
        for tasks in [1, 100, 10_000] {
            for design in Design::ALL {
                let outcome = run(&runtime, design, tasks);
                assert_eq!(
                    outcome.token_calls,
                    design.token_calls(tasks),
                    "{}, {tasks} tasks",
                    design.name()
                );
                assert_eq!(outcome.waited, tasks, "{}", design.name());
                if design.single_flight() {
                    // Polled to wait and again when woken; a busy runtime may poll a
                    // task once more (a spurious wake), so this is a lower bound.
                    assert!(outcome.polls >= 2 * tasks as u64, "{}", design.name());
                }
            }
            let floor = run_floor(&runtime, tasks);
            assert_eq!((floor.token_calls, floor.waited), (0, 0));
        }
    }
}
