#!/usr/bin/env bash
# MSRV honesty: fails, listing the offenders, if any package in the locked dependency
# graph (all features, all platforms; the publishable crates' builds and the
# workspace's tests, examples and benches) declares a rust-version newer than ours.
# Needs only cargo: the check is conformance/src/bin/msrv-deps.rs (a Rust program,
# so no jq or python; the JSON is read with serde_json). Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run -q --locked -p procore-auth-conformance --bin msrv-deps -- "$@"
