//! `cargo bench -p procore-auth-benches --bench reqwest_overhead`
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use procore_auth_benches::reqwest_overhead::{run, Chain};

fn reqwest_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("reqwest_overhead");
    for chain in Chain::ALL {
        group.bench_function(chain.name(), |b| {
            b.iter_custom(|iterations| run(chain, iterations))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = reqwest_overhead
}
criterion_main!(benches);
