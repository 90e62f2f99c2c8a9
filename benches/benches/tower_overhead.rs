//! `cargo bench -p procore-auth-benches --bench tower_overhead`
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use procore_auth_benches::tower_overhead::{run, Shape, Stack};

fn tower_overhead(c: &mut Criterion) {
    for shape in Shape::ALL {
        let mut group = c.benchmark_group(format!("tower_overhead/{}", shape.name()));
        for stack in Stack::ALL {
            group.bench_function(stack.name(), |b| {
                b.iter_custom(|iterations| run(stack, shape, iterations))
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
    targets = tower_overhead
}
criterion_main!(benches);
