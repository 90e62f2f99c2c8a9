//! MSRV honesty: every dependency in the locked graph must declare a `rust-version`
//! no newer than the workspace's own. Ignored by a plain `cargo test` (it asks cargo
//! about every platform's packages, which may need the network); run by
//! `scripts/msrv-deps.sh`, and so by `.ci/run`, which prints the offenders and fails
//! if there are any.
//!
//! The graph is cargo's own (`cargo tree --locked --all-features --target all`):
//! every feature of ours (`native-tls` too), every platform's dependencies, features
//! resolved as cargo builds them. The declared versions come from `cargo metadata`.
//! Two scopes, both enforced:
//!
//! - **normal**: what the publishable crates pull in to build (normal and build
//!   dependencies, transitively). An offender here breaks our users at our MSRV.
//! - **dev/tooling**: what the workspace's tests, examples, benches and conformance
//!   suite add (our dev-dependencies, the publish = false members). An offender here
//!   breaks only running our own tests at the MSRV.
//!
//! Packages that declare no `rust-version` cannot be checked; they are counted. Our
//! own crates are checked by clippy's `incompatible_msrv` instead. A build with the
//! MSRV toolchain is the full proof; this is the cheap, always-on check.
//! `MSRV_DEPS_RUST_VERSION=1.85 scripts/msrv-deps.sh` checks against another version
//! (to see what a lower MSRV would take).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

type Version = (u64, u64, u64);

/// `1.88` and `1.88.0` alike; `None` if not a version.
fn parse_version(text: &str) -> Option<Version> {
    let mut parts = text.trim().split('.').map(|part| part.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, patch))
}

fn show((major, minor, patch): Version) -> String {
    format!("{major}.{minor}.{patch}")
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

#[test]
#[ignore = "run by scripts/msrv-deps.sh: cargo metadata of every platform may need the network"]
fn no_dependency_needs_a_newer_rust_than_ours() {
    match run() {
        Ok(true) => {}
        Ok(false) => panic!("dependencies need a newer Rust than our rust-version (above)"),
        Err(error) => panic!("msrv-deps: {error}"),
    }
}

/// Runs cargo with `args` on the workspace; its standard output.
fn cargo(args: &[&str]) -> Result<String, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(cargo)
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .map_err(|error| format!("could not run cargo: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|error| error.to_string())
}

/// The packages (name, version) that `cargo tree` lists for `selection`.
fn tree(selection: &[String], edges: &str) -> Result<BTreeSet<(String, String)>, String> {
    let mut args = vec![
        "tree",
        "--locked",
        "--all-features",
        "--target",
        "all",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "--edges",
        edges,
    ];
    args.extend(selection.iter().map(String::as_str));
    let listed = cargo(&args)?;
    Ok(listed
        .lines()
        .filter_map(|line| {
            // "name v1.2.3", then " (source)" or " (*)" for some.
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some((name.to_owned(), version.to_owned()))
        })
        .collect())
}

fn run() -> Result<bool, String> {
    let metadata = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--all-features",
        "--locked",
    ])?;
    let metadata: Value = serde_json::from_str(&metadata)
        .map_err(|error| format!("cargo metadata printed no JSON: {error}"))?;
    let packages = metadata["packages"].as_array().ok_or("no packages")?;
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .ok_or("no workspace members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let member_packages: Vec<&Value> = packages
        .iter()
        .filter(|package| str_field(package, "id").is_some_and(|id| members.contains(&id)))
        .collect();
    let ours = match std::env::var("MSRV_DEPS_RUST_VERSION") {
        Ok(version) => parse_version(&version).ok_or(format!("not a version: {version}"))?,
        Err(_) => member_packages
            .iter()
            .filter_map(|package| str_field(package, "rust_version").and_then(parse_version))
            .min()
            .ok_or("no workspace member declares a rust-version")?,
    };
    let our_names: BTreeSet<&str> = member_packages
        .iter()
        .filter_map(|package| str_field(package, "name"))
        .collect();
    // `publish = false` is `"publish": []`; absent (null) means crates.io.
    let publishable: Vec<String> = member_packages
        .iter()
        .filter(|package| {
            package["publish"]
                .as_array()
                .is_none_or(|to| !to.is_empty())
        })
        .filter_map(|package| Some(format!("--package={}", str_field(package, "name")?)))
        .collect();
    let declared: HashMap<(&str, &str), Option<&str>> = packages
        .iter()
        .filter_map(|package| {
            let key = (str_field(package, "name")?, str_field(package, "version")?);
            Some((key, str_field(package, "rust_version")))
        })
        .collect();

    let not_ours = |set: BTreeSet<(String, String)>| -> BTreeSet<(String, String)> {
        set.into_iter()
            .filter(|(name, _)| !our_names.contains(name.as_str()))
            .collect()
    };
    let normal = not_ours(tree(&publishable, "normal,build")?);
    let everything = not_ours(tree(&["--workspace".to_owned()], "normal,build,dev")?);

    println!(
        "rust-version {}: {} dependencies in the publishable crates' builds, {} more for tests, examples and benches (all features, all platforms)",
        show(ours),
        normal.len(),
        everything.difference(&normal).count(),
    );
    let mut offenders = BTreeMap::new();
    let mut undeclared = 0;
    let mut at_ours = Vec::new();
    for (name, version) in normal.union(&everything) {
        let Some(rust_version) = declared
            .get(&(name.as_str(), version.as_str()))
            .copied()
            .flatten()
        else {
            undeclared += 1;
            continue;
        };
        let Some(theirs) = parse_version(rust_version) else {
            println!(
                "  warning: {name} {version} declares an unreadable rust-version {rust_version:?}"
            );
            continue;
        };
        if theirs == ours {
            at_ours.push(format!("{name} {version}"));
        }
        if theirs > ours {
            let scope = if normal.contains(&(name.clone(), version.clone())) {
                "normal: breaks our users at our MSRV"
            } else {
                "dev/tooling: breaks running our tests at our MSRV"
            };
            offenders.insert(format!("{name} {version}"), (theirs, scope));
        }
    }
    for (package, (theirs, scope)) in &offenders {
        println!(
            "  OFFENDER {package} needs Rust {} ({scope})",
            show(*theirs)
        );
    }
    println!(
        "  {undeclared} declare no rust-version (not checkable); exactly {}: {}",
        show(ours),
        if at_ours.is_empty() {
            "none".to_owned()
        } else {
            at_ours.join(", ")
        }
    );
    if offenders.is_empty() {
        println!("  ok: no dependency needs a newer Rust than {}", show(ours));
    } else {
        println!(
            "  fix: `cargo update -p <name> --precise <older version>` (or raise rust-version, and say so in the CHANGELOG)"
        );
    }
    Ok(offenders.is_empty())
}
