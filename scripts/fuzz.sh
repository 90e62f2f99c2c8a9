#!/usr/bin/env bash
# Long fuzzing run of the token-endpoint parsers (token/error responses, token info,
# revoke), not part of CI. cargo-fuzz needs a nightly toolchain, which this project
# does not use, so the fuzzer is a proptest property (procore-auth-core,
# src/oauth/response.rs, mod fuzz) run for many more cases than CI's default 256.
#
#   scripts/fuzz.sh                  # 1 000 000 cases
#   CASES=20000000 scripts/fuzz.sh   # longer
#
# A failure prints the minimal failing input and records it in
# procore-auth-core/proptest-regressions/ (commit that file: CI then replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${CASES:-1000000}"
echo "fuzzing the token-endpoint parsers with $cases cases"
start=$(date +%s)
PROPTEST_CASES="$cases" PROPTEST_MAX_SHRINK_ITERS=100000 \
  cargo test --release -p procore-auth-core --lib oauth::response::fuzz -- --nocapture
echo "done: $cases cases in $(( $(date +%s) - start )) s, no failure"
