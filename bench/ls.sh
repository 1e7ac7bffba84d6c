#!/usr/bin/env bash
# berth-ls on a big store: 10,000 containers and 1,000 images (each with a
# manifest, config, layer and snapshot), built through the library by
# examples/ls_fill.rs. Times each listing kind, as a table and as JSON,
# with the release binary, and prints the medians (goal: < 100 ms each).
#   bench/ls.sh [RUNS] [CONTAINERS] [IMAGES]     (default 9 10000 1000)
set -euo pipefail
runs=${1:-9}
containers=${2:-10000}
images=${3:-1000}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bin berth-ls --example ls_fill
bin=$top/target/release

work=$(mktemp -d /tmp/berth-bench-ls.XXXXXX)
trap 'rm -rf "$work"' EXIT
. "$here/lib.sh"
"$bin/examples/ls_fill" "$work/root" "$containers" "$images"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
export BERTH_CONFIG=/dev/null
unset BERTH_ROOT BERTH_LOG
for kind in containers images snapshots content; do
  for format in table json; do
    times=()
    rows=$("$bin/berth-ls" --root "$work/root" "$kind" -q | wc -l)
    for _ in $(seq "$runs"); do
      t0=$(now)
      "$bin/berth-ls" --root "$work/root" "$kind" --format "$format" >/dev/null
      t1=$(now)
      times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) * 1000}')")
    done
    printf 'median: berth-ls %-10s --format %-5s %7.1f ms  (%d rows, %d runs)\n' \
      "$kind" "$format" "$(median "${times[@]}")" "$rows" "$runs"
  done
done
t0=$(now)
"$bin/berth-ls" --root "$work/root" --check >/dev/null && status=sound || status=damaged
t1=$(now)
printf 'berth-ls --check: %s in %.1f ms\n' "$status" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) * 1000}')"
