//! Drives `N` units of one variant, for counting instructions under
//! `valgrind --tool=callgrind` (see `scripts/instructions.sh`, which runs it at two
//! `N` and reports instructions per unit). Instruction counts do not drift on a
//! shared machine the way times do.
//!
//! `instructions <group> <variant index> <N>`, groups: `read` ([`Reader::ALL`]),
//! `tower-empty` / `tower-typical` ([`Stack::ALL`]: the off-the-shelf peers, the
//! layer over the no-op service and over a hyper-util client handle, the registry of
//! 1 000 tenants and one manager with the registry's request among them, and the
//! stacks whose service answers with Procore's rate-limit headers or with other
//! headers), `reqwest` ([`Chain::ALL`], likewise), `herd` (every [`Design::ALL`] and
//! the floor under them, in herds of 1 000 and of 10 000 tasks; `N` counts released
//! waiters, run as `N` / herd size whole herds, so a unit is one waiter in every
//! variant); `instructions list` names the variants and, in a fourth column, those
//! each is compared with (`;`-separated), in a fifth the floor under it if any (its
//! ratios are then also taken above the floor). (The Redis store's benches wait on a
//! server: they are timed, not counted.)

use procore_auth_benches::refresh_contention::{self, Design};
use procore_auth_benches::reqwest_overhead::{self, Chain};
use procore_auth_benches::token_read::{Fixture, Reader};
use procore_auth_benches::tower_overhead::{self, Shape, Stack};

/// The herd sizes, and what runs in herds of each: (`None`) the floor, then every
/// design.
const HERD_SIZES: [usize; 2] = [1_000, 10_000];
const HERD_VARIANTS: usize = Design::ALL.len() + 1;

fn herd_variant(index: usize) -> (usize, Option<Design>) {
    let design = (index % HERD_VARIANTS).checked_sub(1);
    (
        HERD_SIZES[index / HERD_VARIANTS],
        design.map(|design| Design::ALL[design]),
    )
}

fn herd_name(tasks: usize, design: Option<Design>) -> String {
    let name = design.map_or("floor: spawn and join, no waiting", Design::name);
    format!("herd of {tasks}: {name}")
}

fn list() {
    let joined = |names: Vec<&str>| names.join(";");
    // Group, name, compared with, floor.
    let mut rows: Vec<(&str, String, String, String)> = Vec::new();
    for reader in Reader::ALL {
        let baseline = Reader::ArcSwapLoad.name().to_owned();
        rows.push(("read", reader.name().to_owned(), baseline, String::new()));
    }
    for stack in Stack::ALL {
        let baselines = joined(stack.compared_with().iter().map(|s| s.name()).collect());
        let group = "tower-empty / tower-typical";
        rows.push((group, stack.name().to_owned(), baselines, String::new()));
    }
    for chain in Chain::ALL {
        let baselines = joined(chain.compared_with().iter().map(|c| c.name()).collect());
        rows.push(("reqwest", chain.name().to_owned(), baselines, String::new()));
    }
    for index in 0..HERD_SIZES.len() * HERD_VARIANTS {
        let (tasks, design) = herd_variant(index);
        let (baseline, floor) = match design {
            Some(_) => (
                herd_name(tasks, Some(Design::SharedPerGeneration)),
                herd_name(tasks, None),
            ),
            None => Default::default(),
        };
        rows.push(("herd", herd_name(tasks, design), baseline, floor));
    }
    let mut previous = "";
    let mut index = 0;
    for (group, name, baselines, floor) in &rows {
        if *group != previous {
            (previous, index) = (group, 0);
        }
        println!("{group}\t{index}\t{name}\t{baselines}\t{floor}");
        index += 1;
    }
}

/// Releases `waiters` tasks in herds of `tasks`, checking that every herd was one
/// (all its tasks waited), made its design's token calls and (single flight) woke
/// each waiter once.
fn herds(tasks: usize, design: Option<Design>, waiters: u64) {
    let tasks_u64 = tasks as u64;
    assert!(
        waiters.is_multiple_of(tasks_u64),
        "herd: N ({waiters}) must be a multiple of the herd size ({tasks})"
    );
    let runtime = refresh_contention::runtime();
    for _ in 0..waiters / tasks_u64 {
        match design {
            Some(design) => {
                let outcome = refresh_contention::run(&runtime, design, tasks);
                assert_eq!(
                    outcome.token_calls,
                    design.token_calls(tasks),
                    "{}",
                    design.name()
                );
                assert_eq!(outcome.waited, tasks, "{}", design.name());
                if design.single_flight() {
                    // Each waiter woken once, on release.
                    assert_eq!(outcome.polls, 2 * tasks_u64, "{}", design.name());
                }
            }
            None => {
                let outcome = refresh_contention::run_floor(&runtime, tasks);
                assert_eq!((outcome.token_calls, outcome.waited), (0, 0));
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: instructions list | instructions <read|tower-empty|tower-typical|reqwest|herd> <variant> <N>";
    if args.first().map(String::as_str) == Some("list") {
        list();
        return;
    }
    let [group, variant, units] = &args[..] else {
        panic!("{usage}");
    };
    let variant: usize = variant.parse().expect(usage);
    let units: u64 = units.parse().expect(usage);
    match group.as_str() {
        "read" => {
            let fixture = Fixture::new();
            for _ in 0..units {
                std::hint::black_box(fixture.read(Reader::ALL[variant]));
            }
        }
        "tower-empty" => drop(tower_overhead::run(
            Stack::ALL[variant],
            Shape::Empty,
            units,
        )),
        "tower-typical" => drop(tower_overhead::run(
            Stack::ALL[variant],
            Shape::Typical,
            units,
        )),
        "reqwest" => drop(reqwest_overhead::run(Chain::ALL[variant], units)),
        "herd" => {
            let (tasks, design) = herd_variant(variant);
            herds(tasks, design, units);
        }
        _ => panic!("{usage}"),
    }
}
