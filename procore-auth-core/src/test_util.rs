//! Test doubles for code that uses a [`TokenManager`](crate::TokenManager): enable the
//! `test-util` feature.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{BoxFuture, MemoryStore, StoreError, Token, TokenStore};

type SaveHook = Box<dyn Fn(&Token) + Send + Sync>;

/// A [`MemoryStore`] with faults to inject and counters to read. Clones share one
/// store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use procore_auth_core::test_util::FaultyStore;
/// use procore_auth_core::TokenStore;
///
/// let store = FaultyStore::default();
/// store.fail_next_saves(1); // the next save fails with an I/O error ("disk full")
/// assert!(store.load().await.unwrap().is_none());
/// assert_eq!(store.loads(), 1);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct FaultyStore {
    memory: MemoryStore,
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    loads: AtomicU64,
    failing_saves: AtomicU32,
    panicking_loads: AtomicBool,
    on_save: Mutex<Option<SaveHook>>,
    /// Loads wait while a guard of [`FaultyStore::pause_loads`] lives.
    load_gate: futures_util::lock::Mutex<()>,
}

impl FaultyStore {
    /// A store holding `token`.
    pub fn with_token(token: Token) -> Self {
        Self {
            memory: MemoryStore::with_token(token),
            faults: Arc::default(),
        }
    }

    /// The underlying store, to seed or inspect without counting or faults (a peer
    /// process saving, say).
    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// Makes the next `saves` saves fail with an I/O error.
    pub fn fail_next_saves(&self, saves: u32) {
        self.faults.failing_saves.store(saves, Ordering::SeqCst);
    }

    /// Makes loads panic (or stop panicking).
    pub fn panic_on_load(&self, panic: bool) {
        self.faults.panicking_loads.store(panic, Ordering::SeqCst);
    }

    /// Calls `hook` with every token about to be saved, before the save.
    pub fn on_save(&self, hook: impl Fn(&Token) + Send + Sync + 'static) {
        *self.hook() = Some(Box::new(hook));
    }

    /// Holds every load (after it is counted) until the returned guard is dropped:
    /// for tests that act while a load is under way.
    pub async fn pause_loads(&self) -> impl Drop + '_ {
        self.faults.load_gate.lock().await
    }

    /// Loads so far.
    pub fn loads(&self) -> u64 {
        self.faults.loads.load(Ordering::SeqCst)
    }

    fn hook(&self) -> std::sync::MutexGuard<'_, Option<SaveHook>> {
        self.faults
            .on_save
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for FaultyStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.faults.loads.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.faults.panicking_loads.load(Ordering::SeqCst),
            "FaultyStore told to panic on load"
        );
        Box::pin(async move {
            drop(self.faults.load_gate.lock().await);
            self.memory.load().await
        })
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(hook) = &*self.hook() {
            hook(token);
        }
        let failing = self
            .faults
            .failing_saves
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let error = StoreError::from(std::io::Error::other("disk full"));
            return Box::pin(async move { Err(error) });
        }
        self.memory.save(token, expected)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.memory.clear()
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("loads", &self.loads())
            .finish_non_exhaustive()
    }
}
