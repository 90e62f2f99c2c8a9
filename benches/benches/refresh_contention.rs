//! `cargo bench -p procore-auth-benches --bench refresh_contention`
//!
//! Each iteration is one herd; the reported time is its release: from the end of the
//! (last) refresh until the last task holds a header. Every herd asserts how many token
//! calls its design made: exactly one for the single-flight designs.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use procore_auth_benches::e2e::{Adapter, Setup};
use procore_auth_benches::refresh_contention::{run, runtime, Design};

fn refresh_contention(c: &mut Criterion) {
    let runtime = runtime();
    for tasks in [10, 1_000, 10_000, 100_000] {
        let mut group = c.benchmark_group(format!("refresh_contention/{tasks}_tasks"));
        group.sample_size(10);
        for design in Design::ALL {
            let mut most_calls = 0;
            group.bench_function(BenchmarkId::from_parameter(design.name()), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| {
                            let outcome = run(&runtime, design, tasks);
                            if matches!(design, Design::Manager | Design::SharedPerGeneration) {
                                assert_eq!(outcome.token_calls, 1, "{}", design.name());
                            }
                            most_calls = most_calls.max(outcome.token_calls);
                            outcome.release
                        })
                        .sum()
                })
            });
            println!(
                "{:>32}: at most {most_calls} token call(s) per herd",
                design.name()
            );
        }
        group.finish();
    }
}

/// The same herd through the real adapters, over loopback HTTP to the emulator.
fn refresh_contention_e2e(c: &mut Criterion) {
    let runtime = runtime();
    let setup = Setup::new(&runtime);
    for requests in [100, 1_000] {
        let mut group = c.benchmark_group(format!("refresh_contention_e2e/{requests}_requests"));
        group.sample_size(10);
        for adapter in Adapter::ALL {
            group.bench_function(BenchmarkId::from_parameter(adapter.name()), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| {
                            let (elapsed, refreshes) = setup.herd(&runtime, adapter, requests);
                            assert_eq!(refreshes, 1, "{}", adapter.name());
                            elapsed
                        })
                        .sum()
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    targets = refresh_contention, refresh_contention_e2e
}
criterion_main!(benches);
