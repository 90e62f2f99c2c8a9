//! Interleaved ratio runner: every variant once per round, in an order rotated each
//! round, median per variant over all rounds. Run-to-run drift on a small machine
//! (10–25 % between criterion groups run one after another) cancels out of ratios
//! taken this way.
//!
//! `cargo run --release -p procore-auth-benches --bin ratios -- [--rounds N] [--only TEXT]`
//! (default 30 rounds; `--only tower` runs only the groups whose name contains
//! `tower`, `--only redis` the Redis store's, which start a private `redis-server`).
//! Prints a Markdown table.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use procore_auth_benches::e2e::{Adapter, Setup};
use procore_auth_benches::redis_store::{self, ColdLoads, Store, COLD_KEYS, HERD};
use procore_auth_benches::refresh_contention::{self, Design};
use procore_auth_benches::reqwest_overhead::{self, Chain};
use procore_auth_benches::token_read::{self, Reader};
use procore_auth_benches::tower_overhead::{self, Shape, Stack};
use procore_auth_testkit::RedisServer;

/// One measured variant: its table group, its name, and a run returning its measure
/// (ns per unit unless its group says otherwise).
struct Variant {
    group: String,
    name: &'static str,
    /// The variants of the same group that ratios are taken against.
    baselines: Vec<&'static str>,
    run: Box<dyn Fn() -> f64>,
}

fn per_unit(elapsed: Duration, units: u64) -> f64 {
    elapsed.as_nanos() as f64 / units as f64
}

fn variants() -> Vec<Variant> {
    let mut variants = Vec::new();
    let fixture = token_read::Fixture::new();
    for threads in [1, 2, 8] {
        for reader in Reader::ALL {
            let fixture = fixture.clone();
            const READS: u64 = 200_000;
            variants.push(Variant {
                group: format!("token read, {threads} thread(s), ns per read"),
                name: reader.name(),
                baselines: vec![Reader::ArcSwapLoad.name()],
                run: Box::new(move || {
                    per_unit(token_read::run(&fixture, reader, threads, READS), READS)
                }),
            });
        }
    }
    for shape in Shape::ALL {
        for stack in Stack::ALL {
            const REQUESTS: u64 = 100_000;
            variants.push(Variant {
                group: format!("tower, {}, ns per request", shape.name()),
                name: stack.name(),
                baselines: stack.compared_with().iter().map(|s| s.name()).collect(),
                run: Box::new(move || {
                    per_unit(tower_overhead::run(stack, shape, REQUESTS), REQUESTS)
                }),
            });
        }
    }
    for chain in Chain::ALL {
        const REQUESTS: u64 = 50_000;
        variants.push(Variant {
            group: "reqwest-middleware, ns per request".to_owned(),
            name: chain.name(),
            baselines: chain.compared_with().iter().map(|c| c.name()).collect(),
            run: Box::new(move || per_unit(reqwest_overhead::run(chain, REQUESTS), REQUESTS)),
        });
    }
    let runtime = Rc::new(refresh_contention::runtime());
    for tasks in [1_000, 10_000] {
        for design in Design::ALL {
            let runtime = Rc::clone(&runtime);
            variants.push(Variant {
                group: format!("refresh herd of {tasks}, release ns per waiting task"),
                name: design.name(),
                baselines: vec![Design::SharedPerGeneration.name()],
                run: Box::new(move || {
                    let outcome = refresh_contention::run(&runtime, design, tasks);
                    if matches!(design, Design::Manager | Design::SharedPerGeneration) {
                        assert_eq!(outcome.token_calls, 1, "{}", design.name());
                    }
                    // A herd: every task waited for the refresh.
                    assert_eq!(outcome.waited, tasks, "{}", design.name());
                    TOKEN_CALLS.with(|calls| {
                        let mut calls = calls.borrow_mut();
                        let most = calls.entry((tasks, design.name())).or_insert(0);
                        *most = (*most).max(outcome.token_calls);
                    });
                    per_unit(outcome.release, tasks as u64)
                }),
            });
        }
    }
    redis_variants(&runtime, &mut variants);
    variants
}

/// The Redis store's groups, in µs. The server, the emulators and the stores start
/// on the first run of one of them (the untimed warm-up), so the other groups do not
/// need Redis.
fn redis_variants(runtime: &Rc<tokio::runtime::Runtime>, variants: &mut Vec<Variant>) {
    let redis: Rc<OnceCell<Redis>> = Rc::default();
    let micros = |elapsed: Duration, units: usize| per_unit(elapsed, units as u64) / 1_000.0;
    for (index, store) in Store::ALL.into_iter().enumerate() {
        let (redis, runtime) = (Rc::clone(&redis), Rc::clone(runtime));
        variants.push(Variant {
            group: format!(
                "redis store: forced refresh, {HERD} waiters, µs until all hold the new token"
            ),
            name: store.name(),
            baselines: vec![Store::Memory.name()],
            run: Box::new(move || {
                let setup = &Redis::get(&redis, &runtime).setups[index];
                micros(redis_store::forced_refresh(&runtime, setup), 1)
            }),
        });
    }
    for (index, store) in Store::ALL.into_iter().enumerate() {
        let (redis, runtime) = (Rc::clone(&redis), Rc::clone(runtime));
        variants.push(Variant {
            group: format!(
                "redis store: forced refresh, {HERD} requests through ProcoreAuthLayer + hyper-util, µs until all answered"
            ),
            name: store.name(),
            baselines: vec![Store::Memory.name()],
            run: Box::new(move || {
                let setup = &Redis::get(&redis, &runtime).setups[index];
                let (elapsed, refreshes) = setup.herd(&runtime, Adapter::Tower, HERD);
                assert_eq!(refreshes, 1, "one refresh per herd");
                micros(elapsed, 1)
            }),
        });
    }
    let cold_group = format!(
        "redis store: registry's first request per tenant ({COLD_KEYS} tenants), µs per tenant"
    );
    for (index, store) in Store::ALL.into_iter().enumerate() {
        let (redis, runtime) = (Rc::clone(&redis), Rc::clone(runtime));
        variants.push(Variant {
            group: cold_group.clone(),
            name: store.keyed_name(),
            baselines: vec![Store::Memory.keyed_name()],
            run: Box::new(move || {
                let cold = &Redis::get(&redis, &runtime).cold[index];
                micros(cold.run(&runtime), cold.keys())
            }),
        });
    }
    for (index, store) in Store::ALL.into_iter().enumerate() {
        let (redis, runtime) = (Rc::clone(&redis), Rc::clone(runtime));
        variants.push(Variant {
            group: cold_group.clone(),
            name: store.load_alone_name(),
            baselines: vec![store.keyed_name()],
            run: Box::new(move || {
                let cold = &Redis::get(&redis, &runtime).cold[index];
                micros(cold.store_only(&runtime), cold.keys())
            }),
        });
    }
}

/// What the Redis groups run against, one per store in [`Store::ALL`] order.
struct Redis {
    setups: Vec<Setup>,
    cold: Vec<ColdLoads>,
    // Last: the stores' connections close before the server stops.
    _server: RedisServer,
}

impl Redis {
    fn get<'a>(cell: &'a OnceCell<Redis>, runtime: &tokio::runtime::Runtime) -> &'a Redis {
        cell.get_or_init(|| {
            let server = redis_store::start_redis();
            Redis {
                setups: Store::ALL
                    .map(|store| redis_store::refresh_setup(runtime, store, &server))
                    .into(),
                cold: Store::ALL
                    .map(|store| ColdLoads::new(runtime, store, &server, COLD_KEYS))
                    .into(),
                _server: server,
            }
        })
    }
}

thread_local! {
    static TOKEN_CALLS: std::cell::RefCell<BTreeMap<(usize, &'static str), u64>> =
        std::cell::RefCell::default();
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let middle = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[middle - 1] + samples[middle]) / 2.0
    } else {
        samples[middle]
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut rounds = 30;
    let mut only = None;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--rounds", Some(n)) => rounds = n.parse().expect("--rounds takes a number"),
            ("--only", Some(text)) => only = Some(text),
            _ => panic!("usage: ratios [--rounds N] [--only TEXT]"),
        }
    }
    let mut variants = variants();
    if let Some(only) = only {
        variants.retain(|variant| variant.group.contains(&only));
    }
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    // Warm up once, untimed.
    for variant in &variants {
        (variant.run)();
    }
    for round in 0..rounds {
        for offset in 0..variants.len() {
            let index = (offset + round) % variants.len();
            samples[index].push((variants[index].run)());
        }
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();

    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let mut current_group = None;
    println!("| group | variant | median | ratio |");
    println!("|---|---|---:|---:|");
    for (variant, median) in variants.iter().zip(&medians) {
        let ratios: Vec<String> = variant
            .baselines
            .iter()
            .map(|baseline| {
                let of_baseline = variants
                    .iter()
                    .zip(&medians)
                    .find(|(other, _)| other.group == variant.group && other.name == *baseline)
                    .map_or(f64::NAN, |(_, median)| *median);
                format!("{:.2}× {baseline}", median / of_baseline)
            })
            .collect();
        let group = if current_group == Some(&variant.group) {
            ""
        } else {
            current_group = Some(&variant.group);
            &variant.group
        };
        println!(
            "| {group} | {} | {median:.1} | {} |",
            variant.name,
            ratios.join("; ")
        );
    }
    TOKEN_CALLS.with(|calls| {
        println!();
        for ((tasks, design), most) in calls.borrow().iter() {
            println!("- herd of {tasks}: {design} made at most {most} token call(s) per herd");
        }
    });
}
