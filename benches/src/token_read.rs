//! Reading the current bearer header: `TokenManager::bearer()` against hand-written
//! alternatives, from several threads at once.
//!
//! The lock-based designs only lock and clone the header (no expiry check), which
//! flatters them: a correct naive design would also read the clock.

use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use http::HeaderValue;
use procore_auth_core::{Token, TokenManager};

use crate::{fresh_token, NeverRefreshes};

/// One way of reading the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// `TokenManager::bearer()` polled once on a fresh token.
    Manager,
    /// `TokenManager::fresh_bearer()`: the synchronous fast path the adapters use.
    ManagerFresh,
    /// The floor: `ArcSwap::load()` plus a `HeaderValue` clone, no freshness check.
    ArcSwapLoad,
    /// `std::sync::RwLock<Arc<Token>>`.
    StdRwLock,
    /// `std::sync::Mutex<Token>`.
    StdMutex,
    /// `tokio::sync::RwLock<Arc<Token>>`.
    TokioRwLock,
}

impl Reader {
    /// Every reader, baseline first.
    pub const ALL: [Reader; 6] = [
        Reader::ArcSwapLoad,
        Reader::ManagerFresh,
        Reader::Manager,
        Reader::StdRwLock,
        Reader::StdMutex,
        Reader::TokioRwLock,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Reader::Manager => "TokenManager::bearer",
            Reader::ManagerFresh => "TokenManager::fresh_bearer",
            Reader::ArcSwapLoad => "ArcSwap::load+clone",
            Reader::StdRwLock => "std RwLock<Arc<Token>>",
            Reader::StdMutex => "std Mutex<Token>",
            Reader::TokioRwLock => "tokio RwLock<Arc<Token>>",
        }
    }
}

/// The shared state every reader reads from.
#[derive(Debug)]
pub struct Fixture {
    manager: TokenManager,
    arc_swap: ArcSwap<HeaderValue>,
    std_rwlock: RwLock<Arc<Token>>,
    std_mutex: Mutex<Token>,
    tokio_rwlock: tokio::sync::RwLock<Arc<Token>>,
}

impl Fixture {
    /// Builds every variant around the same fresh token.
    pub fn new() -> Arc<Self> {
        let token = fresh_token("read");
        Arc::new(Self {
            manager: TokenManager::builder(NeverRefreshes)
                .token(token.clone())
                .build(),
            arc_swap: ArcSwap::from_pointee(
                token
                    .header_value()
                    .expect("bench tokens have an access token")
                    .clone(),
            ),
            std_rwlock: RwLock::new(Arc::new(token.clone())),
            std_mutex: Mutex::new(token.clone()),
            tokio_rwlock: tokio::sync::RwLock::new(Arc::new(token)),
        })
    }

    /// Reads the header once with `reader`.
    #[inline]
    pub fn read(&self, reader: Reader) -> HeaderValue {
        match reader {
            Reader::Manager => self
                .manager
                .bearer()
                .now_or_never()
                .and_then(Result::ok)
                .expect("the token is fresh")
                .into_header_value(),
            Reader::ManagerFresh => self
                .manager
                .fresh_bearer()
                .expect("the token is fresh")
                .into_header_value(),
            Reader::ArcSwapLoad => (**self.arc_swap.load()).clone(),
            Reader::StdRwLock => self
                .std_rwlock
                .read()
                .expect("never poisoned")
                .header_value()
                .expect("bench tokens have an access token")
                .clone(),
            Reader::StdMutex => self
                .std_mutex
                .lock()
                .expect("never poisoned")
                .header_value()
                .expect("bench tokens have an access token")
                .clone(),
            Reader::TokioRwLock => self
                .tokio_rwlock
                .read()
                .now_or_never()
                .expect("no writer")
                .header_value()
                .expect("bench tokens have an access token")
                .clone(),
        }
    }
}

/// `threads` threads each read `iterations` times at once; returns the wall time, so
/// `time / iterations` is the time per read as each thread sees it.
pub fn run(fixture: &Arc<Fixture>, reader: Reader, threads: usize, iterations: u64) -> Duration {
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (fixture, start) = (Arc::clone(fixture), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..iterations {
                    std::hint::black_box(fixture.read(std::hint::black_box(reader)));
                }
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    for worker in workers {
        worker.join().expect("reader threads do not panic");
    }
    started.elapsed()
}
