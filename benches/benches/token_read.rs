//! `cargo bench -p procore-auth-benches --bench token_read`
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use procore_auth_benches::token_read::{run, Fixture, Reader};

fn token_read(c: &mut Criterion) {
    let fixture = Fixture::new();
    for threads in [1, 2, 8] {
        let mut group = c.benchmark_group(format!("token_read/{threads}_threads"));
        for reader in Reader::ALL {
            group.bench_function(reader.name(), |b| {
                b.iter_custom(|iterations| run(&fixture, reader, threads, iterations))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = token_read
}
criterion_main!(benches);
