#!/usr/bin/env bash
# The bounded soak test (not part of CI): 100 workers for SOAK_SECONDS (default 60)
# against the emulator with 2-second tokens and random injected faults; prints the
# figures. Well under 2 minutes including the release build of the test.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${SOAK_SECONDS:-60}" cargo test --release -p procore-auth-reqwest \
  --test reqwest soak -- --ignored --nocapture
