#!/usr/bin/env bash
# Instructions per unit (read, request, released waiter) for the benchmark variants,
# counted with valgrind's callgrind at two sizes so that set-up cancels out, with
# their ratios to the variants each is compared with. Not run in CI; needs valgrind.
#
# Usage: scripts/instructions.sh [N] [GROUP...]
#   N      units per run, default 20000; the second run is 2N. For `herd`, N counts
#          released waiters, run as whole herds of 1 000 and of 10 000 tasks, so it
#          must be a multiple of 10 000.
#   GROUP  read, tower-empty, tower-typical, reqwest, herd (default: all of them; a
#          full run is slow under valgrind, so pick what you are working on), e.g.
#          scripts/instructions.sh 20000 tower-typical
#
# Progress goes to stderr; the Markdown table to stdout at the end. A herd design's
# ratio is also given above the floor (the same tasks spawned and joined without
# waiting): (design - floor) / (baseline - floor), what waiting and release cost.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
shift || true
all_groups=(read tower-empty tower-typical reqwest herd)
if (($# == 0)); then
    set -- "${all_groups[@]}"
fi
for group in "$@"; do
    case " ${all_groups[*]} " in
    *" $group "*) ;;
    *)
        echo "unknown group '$group' (groups: ${all_groups[*]})" >&2
        exit 2
        ;;
    esac
    if [[ $group == herd ]] && ((n % 10000 != 0)); then
        echo "herd: N ($n) must be a multiple of 10000 (herds of 1 000 and 10 000)" >&2
        exit 2
    fi
done
cargo build -q --release -p procore-auth-benches --bin instructions
bin=target/release/instructions
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" </dev/null 2>&1 |
        awk '/Collected/ { print $4 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) printf "n/a"; else printf "%.2f", a / b }'; }

# The variants: group(s), index, name, compared with (;-separated), floor.
mapfile -t variants < <("$bin" list)
declare -A per_unit
rows=()
for group in "$@"; do
    for line in "${variants[@]}"; do
        IFS=$'\t' read -r groups index name baselines floor <<<"$line"
        case " ${groups//\// } " in
        *" $group "*) ;;
        *) continue ;;
        esac
        small=$(count "$group" "$index" "$n")
        large=$(count "$group" "$index" "$((2 * n))")
        per_unit["$group/$name"]=$(((large - small) / n))
        rows+=("$group"$'\t'"$name"$'\t'"$baselines"$'\t'"$floor")
        printf '%s\t%s\t%d\n' "$group" "$name" "${per_unit["$group/$name"]}" >&2
    done
done

printf '| group | variant | instructions per unit | ratio |\n|---|---|---:|---:|\n'
for row in "${rows[@]}"; do
    IFS=$'\t' read -r group name baselines floor <<<"$row"
    value=${per_unit["$group/$name"]}
    ratios=()
    IFS=';' read -r -a compared <<<"$baselines"
    for baseline in "${compared[@]}"; do
        of=${per_unit["$group/$baseline"]:-}
        [[ -n $of ]] || continue
        text="$(ratio "$value" "$of")× $baseline"
        under=${per_unit["$group/$floor"]:-}
        if [[ -n $floor && -n $under ]]; then
            text+=" ($(ratio "$((value - under))" "$((of - under))")× above the floor)"
        fi
        ratios+=("$text")
    done
    joined=$(printf '%s; ' "${ratios[@]}")
    printf '| %s | %s | %d | %s |\n' "$group" "$name" "$value" "${joined%; }"
done
