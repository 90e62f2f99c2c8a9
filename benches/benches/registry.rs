//! `cargo bench -p procore-auth-benches --bench registry`
//!
//! `registry.manager(&key)` + `fresh_bearer()` for random resident tenants at 10,
//! 10 000 and 1 000 000 resident tenants, beside the same read from one manager and
//! from the same managers in a plain `HashMap` (the floor: memory latency at that
//! size). Each size is built once, only if selected (`-- '/10$'` skips the larger
//! ones), and its build time and memory are printed. The tower request through
//! the registry is in the `tower_overhead` suite.
use std::cell::OnceCell;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use procore_auth_benches::registry::{self, PlainMap, RandomTenants, LOOKUP_SIZES};
use procore_auth_benches::token_read;

fn registry_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_lookup");
    let single = token_read::Fixture::new();
    group.bench_function("single manager, fresh_bearer", |b| {
        b.iter_custom(|iterations| registry::single_manager_reads(&single, iterations))
    });
    for tenants in LOOKUP_SIZES {
        let fixture = OnceCell::new();
        let fixture = || fixture.get_or_init(|| registry::build_reporting(tenants));
        // One sequence per variant for all its batches (criterion calls the closure
        // once per batch): see `RandomTenants`.
        let mut sequence = RandomTenants::new(tenants);
        group.bench_function(
            BenchmarkId::new("registry manager(&key)+fresh_bearer, tenants", tenants),
            |b| {
                let fixture = fixture();
                b.iter_custom(|iterations| registry::lookups(fixture, &mut sequence, iterations))
            },
        );
        let map = OnceCell::new();
        let mut sequence = RandomTenants::new(tenants);
        group.bench_function(
            BenchmarkId::new("HashMap get(&key)+fresh_bearer, tenants", tenants),
            |b| {
                let map = map.get_or_init(|| PlainMap::new(fixture()));
                b.iter_custom(|iterations| {
                    registry::plain_map_lookups(map, &mut sequence, iterations)
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = registry_lookup
}
criterion_main!(benches);
