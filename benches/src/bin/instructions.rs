//! Drives `N` units of one variant, for counting instructions under
//! `valgrind --tool=callgrind` (see `scripts/instructions.sh`, which runs it at two
//! `N` and reports instructions per unit). Instruction counts do not drift on a
//! shared machine the way times do.
//!
//! `instructions <group> <variant index> <N>`, groups: `read` ([`Reader::ALL`]),
//! `tower-empty` / `tower-typical` ([`Stack::ALL`], the registry of 1 000 tenants and
//! one manager with the registry's request among them, and the stacks whose service
//! answers with Procore's rate-limit headers or with other headers), `reqwest`
//! ([`Chain::ALL`], likewise); `instructions list` names the variants. (The Redis
//! store's benches wait on a server: they are timed, not counted.)

use procore_auth_benches::reqwest_overhead::{self, Chain};
use procore_auth_benches::token_read::{Fixture, Reader};
use procore_auth_benches::tower_overhead::{self, Shape, Stack};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: instructions list | instructions <read|tower-empty|tower-typical|reqwest> <variant> <N>";
    if args.first().map(String::as_str) == Some("list") {
        for (group, names) in [
            ("read", Reader::ALL.map(Reader::name).to_vec()),
            (
                "tower-empty / tower-typical",
                Stack::ALL.map(Stack::name).to_vec(),
            ),
            ("reqwest", Chain::ALL.map(Chain::name).to_vec()),
        ] {
            for (index, name) in names.iter().enumerate() {
                println!("{group}\t{index}\t{name}");
            }
        }
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
        _ => panic!("{usage}"),
    }
}
