#!/usr/bin/env bash
# Long fuzzing run of everything procore-auth parses from outside, not part of CI:
#
#   oauth::response::fuzz  the token-endpoint parsers (token/error responses, token
#                          info, revoke), src/oauth/response.rs
#   store::fuzz            the token-file parser behind FileStore::load, src/store.rs
#
# cargo-fuzz needs a nightly toolchain, which this project does not use, so each
# fuzzer is a proptest property (procore-auth-core) run for many more cases than CI's
# default 256. The properties run one after the other, each with CASES cases.
#
#   scripts/fuzz.sh                           # 1 000 000 cases per property
#   CASES=20000000 scripts/fuzz.sh            # longer
#   PROPERTIES=store::fuzz scripts/fuzz.sh    # the token-file parser only
#
# A failure prints the minimal failing input and records it in
# procore-auth-core/proptest-regressions/ (commit that file: CI then replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${CASES:-1000000}"
properties="${PROPERTIES:-oauth::response::fuzz store::fuzz}"
start=$(date +%s)
cargo test --release -p procore-auth-core --lib --no-run
echo "built in $(( $(date +%s) - start )) s"
for property in $properties; do
  echo "fuzzing $property with $cases cases"
  begin=$(date +%s)
  PROPTEST_CASES="$cases" PROPTEST_MAX_SHRINK_ITERS=100000 \
    cargo test --release -p procore-auth-core --lib "$property" -- --nocapture
  echo "done: $property, $cases cases in $(( $(date +%s) - begin )) s, no failure"
done
echo "all done in $(( $(date +%s) - start )) s"
