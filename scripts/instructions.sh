#!/usr/bin/env bash
# Instructions per unit (read, request) for every benchmark variant, counted with
# valgrind's callgrind at two sizes so that set-up cancels out. Not run in CI; needs
# valgrind. Usage: scripts/instructions.sh [N] (default 20000; the second run is 2N).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
cargo build -q --release -p procore-auth-benches --bin instructions
bin=target/release/instructions
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
        awk '/Collected/ { print $4 }'
}
printf '| group | variant | instructions per unit |\n|---|---|---:|\n'
"$bin" list | while IFS=$'\t' read -r groups index name; do
    for group in ${groups//\// }; do
        small=$(count "$group" "$index" "$n")
        large=$(count "$group" "$index" "$((2 * n))")
        printf '| %s | %s | %d |\n' "$group" "$name" "$(((large - small) / n))"
    done
done
