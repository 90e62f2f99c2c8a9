#!/usr/bin/env bash
# MSRV honesty: fails, listing the offenders, if any package in the locked dependency
# graph (all features, all platforms; the publishable crates' builds and the
# workspace's tests, examples and benches) declares a rust-version newer than ours.
# MSRV_DEPS_RUST_VERSION=1.85 checks against another version. Needs only cargo: the
# check is an ignored test, conformance/tests/msrv_deps.rs (Rust reading cargo's JSON
# with serde_json, so no jq or python). Selected from the whole workspace so that it
# reuses what `cargo test --workspace` built (same features): run by .ci/run after it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test -q --locked --workspace --test msrv_deps -- --ignored --nocapture
