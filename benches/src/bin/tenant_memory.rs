//! Heap bytes per idle resident tenant of a `TokenRegistry`, beyond the token itself.
//!
//! `cargo run --release -p procore-auth-benches --bin tenant_memory -- [--tenants N] [--room PERCENT] [--profile FILE]`
//! (default 10 000 tenants, `max_resident` 125 % of them: the registry's bound is
//! split over shards, see `registry::room_for`). Live heap bytes are counted by dhat's global allocator
//! (`dhat::HeapStats`: bytes requested from the allocator, which adds its own 8–16
//! bytes per block; the block counts are printed too):
//!
//! 1. the token alone: `N` distinct tokens (as every tenant has its own) in a `Vec`;
//! 2. `N` tenants inserted into a registry (its cache table, sized for
//!    `max_resident`, is counted), each with its own token, once with a `KeyedMemoryStore` (which
//!    keeps a second copy of every token) and once with a store that keeps its tokens
//!    outside the process (as Redis or files do), which shows the registry's own
//!    bytes.
//!
//! `--profile FILE` also writes dhat's heap profile (every allocation site's bytes at
//! the end, `dh_view.html`) for finding where the bytes go.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::fmt;

use procore_auth_benches::fresh_token;
use procore_auth_benches::registry::{Fixture, UserId};
use procore_auth_core::{BoxFuture, KeyedMemoryStore, KeyedTokenStore, StoreError, Token};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The target: at most this many bytes per idle tenant beyond its token.
const TARGET: f64 = 1024.0;

/// A keyed store whose tokens live outside the process (Redis, a directory): it keeps
/// nothing in memory, so only the registry's own bytes are counted.
#[derive(Debug)]
struct OutOfProcess;

impl KeyedTokenStore<UserId> for OutOfProcess {
    fn load<'a>(&'a self, _: &'a UserId) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn save<'a>(
        &'a self,
        _: &'a UserId,
        _: &'a Token,
        _: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn clear<'a>(&'a self, _: &'a UserId) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Live heap bytes and blocks.
#[derive(Clone, Copy)]
struct Live {
    bytes: usize,
    blocks: usize,
}

impl Live {
    fn now() -> Self {
        let stats = dhat::HeapStats::get();
        Self {
            bytes: stats.curr_bytes,
            blocks: stats.curr_blocks,
        }
    }

    /// What was allocated since `earlier` and is still live, per unit.
    fn per(self, earlier: Live, units: usize) -> PerUnit {
        PerUnit {
            bytes: (self.bytes as f64 - earlier.bytes as f64) / units as f64,
            blocks: (self.blocks as f64 - earlier.blocks as f64) / units as f64,
        }
    }
}

#[derive(Clone, Copy)]
struct PerUnit {
    bytes: f64,
    blocks: f64,
}

impl fmt::Display for PerUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} bytes in {:.2} blocks", self.bytes, self.blocks)
    }
}

fn token(index: usize) -> Token {
    fresh_token(&index.to_string())
}

/// Live bytes per tenant of a registry of `tenants` tenants with `store`.
fn per_tenant(
    tenants: usize,
    max_resident: usize,
    store: impl KeyedTokenStore<UserId> + 'static,
) -> PerUnit {
    let before = Live::now();
    let fixture = Fixture::with_store(tenants, max_resident, store, token);
    let per_tenant = Live::now().per(before, tenants);
    drop(fixture);
    per_tenant
}

fn main() {
    let usage = "usage: tenant_memory [--tenants N] [--room PERCENT] [--profile FILE]";
    let mut tenants = 10_000;
    let mut room = 125;
    let mut profile = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--tenants", Some(n)) => tenants = n.parse().expect(usage),
            ("--room", Some(percent)) => room = percent.parse().expect(usage),
            ("--profile", Some(file)) => profile = Some(file),
            _ => panic!("{usage}"),
        }
    }
    assert!(tenants > 0, "{usage}");
    let max_resident = tenants * room / 100;
    let _profiler = match &profile {
        Some(file) => dhat::Profiler::builder().file_name(file).build(),
        None => dhat::Profiler::builder().testing().build(),
    };

    // Once-per-process state (the coarse clock's thread, lazy statics) is not a
    // tenant's: create it before counting.
    drop(Fixture::with_store(1, 1, OutOfProcess, token));
    drop(Fixture::with_store(1, 1, KeyedMemoryStore::new(), token));

    let before = Live::now();
    let tokens: Vec<Token> = (0..tenants).map(token).collect();
    let per_token = Live::now().per(before, tenants);
    drop(tokens);

    let elsewhere = per_tenant(tenants, max_resident, OutOfProcess);
    let memory = per_tenant(tenants, max_resident, KeyedMemoryStore::new());

    println!(
        "{tenants} idle resident tenants, max_resident {max_resident}, live heap bytes (dhat):"
    );
    println!(
        "- token alone (Vec<Token>, {} bytes inline): {per_token}",
        std::mem::size_of::<Token>()
    );
    for (store, tenant) in [
        ("store outside the process", elsewhere),
        ("KeyedMemoryStore", memory),
    ] {
        let beyond = tenant.bytes - per_token.bytes;
        println!(
            "- tenant, {store}: {tenant}; beyond the token: {beyond:.1} bytes, {:.2} blocks ({} the 1 KiB target)",
            tenant.blocks - per_token.blocks,
            if beyond <= TARGET { "meets" } else { "misses" },
        );
    }
    if let Some(file) = profile {
        println!("heap profile: {file} (open with dhat's dh_view.html)");
    }
}
