//! `cargo bench -p procore-auth-benches --bench redis_store`
//!
//! What a `RedisStore` on a private `redis-server` (started here, on a free port;
//! a prerequisite of the workspace) adds against the in-process stores:
//!
//! - `redis_refresh/100_waiters`: one forced refresh, the time from the expiry until
//!   all 100 waiters (reporting the 401 to the manager) hold the new token; with the
//!   Redis lease and compare-and-swap save, or the in-process single flight alone.
//! - `redis_refresh_e2e/100_requests`: the same through each adapter, 100 requests
//!   over loopback HTTP to the emulator.
//! - `redis_cold_load/100_keys`: a registry's first request for each of 100 tenants,
//!   loading its token from the store, and the store's `load` alone (the floor); the
//!   time is per key.
//!
//! Every herd asserts that exactly one refresh served it.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use procore_auth_benches::e2e::Adapter;
use procore_auth_benches::redis_store::{
    forced_refresh, refresh_setup, start_redis, ColdLoads, Store, COLD_KEYS, HERD,
};
use procore_auth_benches::refresh_contention::runtime;

fn redis_store(c: &mut Criterion) {
    let runtime = runtime();
    let redis = start_redis();
    let setups = Store::ALL.map(|store| (store, refresh_setup(&runtime, store, &redis)));

    let mut group = c.benchmark_group(format!("redis_refresh/{HERD}_waiters"));
    group.sample_size(10);
    for (store, setup) in &setups {
        group.bench_function(BenchmarkId::from_parameter(store.name()), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| forced_refresh(&runtime, setup))
                    .sum()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("redis_refresh_e2e/{HERD}_requests"));
    group.sample_size(10);
    for adapter in Adapter::ALL {
        for (store, setup) in &setups {
            group.bench_function(BenchmarkId::new(adapter.name(), store.name()), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| {
                            let (elapsed, refreshes) = setup.herd(&runtime, adapter, HERD);
                            assert_eq!(refreshes, 1, "{}, {}", adapter.name(), store.name());
                            elapsed
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group(format!("redis_cold_load/{COLD_KEYS}_keys"));
    for store in Store::ALL {
        let cold = ColdLoads::new(&runtime, store, &redis, COLD_KEYS);
        for (name, run) in [
            (
                store.keyed_name(),
                ColdLoads::run as fn(&ColdLoads, &_) -> Duration,
            ),
            (store.load_alone_name(), ColdLoads::store_only),
        ] {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                // Each iteration is one key: a run loads them all.
                b.iter_custom(|iterations| {
                    let keys = cold.keys() as u64;
                    let runs = iterations.div_ceil(keys);
                    let elapsed: Duration = (0..runs).map(|_| run(&cold, &runtime)).sum();
                    elapsed.mul_f64(iterations as f64 / (runs * keys) as f64)
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = redis_store
}
criterion_main!(benches);
