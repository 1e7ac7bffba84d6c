#!/usr/bin/env bash
# berth-stats cost with 50 running containers (berth-run -d IMAGE sleep 3600):
#   (a) one raw sample of all 50:
#       berth-stats --no-stream --interval 0 --format json
#       median wall time of RUNS runs; goal < 50 ms
#   (b) a 1 Hz stream over them for STREAM seconds:
#       berth-stats --interval 1 --format json > /dev/null
#       CPU time used (utime+stime of /proc/<pid>/stat) / wall time;
#       goal < 2% of a core
# Release build; the store lives on a tmpfs so the disk does not decide.
#   bench/stats.sh [RUNS] [STREAM]      (defaults 20 and 20)
# Every container is killed and removed on exit, also on failure.
set -euo pipefail
runs=${1:-20}
stream=${2:-20}
containers=50
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
"$top/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bins
bin=$top/target/release

work=$(mktemp -d /tmp/berth-bench-stats.XXXXXX)
registry_pid=""
stream_pid=""
. "$here/lib.sh"
export BERTH_CONFIG=/dev/null
root=$work/fs/berth
cleanup() {
  if [ -n "$stream_pid" ]; then kill "$stream_pid" 2>/dev/null || true; fi
  if [ -d "$root" ]; then
    ids=$("$bin/berth-ls" --root "$root" -q --no-trunc 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      "$bin/berth-kill" --root "$root" $ids >/dev/null 2>&1 || true
      # shellcheck disable=SC2086
      "$bin/berth-rm" --root "$root" -f $ids >/dev/null 2>&1 || true
    fi
  fi
  stop_registry
  if mountpoint -q "$work/fs"; then umount -l "$work/fs"; fi
  rm -rf "$work"
}
trap cleanup EXIT
serve_busybox "$work" "$top"
"$bin/berth-pull" -q --root "$root" "$image" >/dev/null

echo "starting $containers containers..." >&2
for i in $(seq "$containers"); do
  "$bin/berth-run" --root "$root" -d --name "s$i" "$image" sleep 3600 >/dev/null
done
running=$("$bin/berth-stats" --root "$root" --no-stream --interval 0 --format json | wc -l)
[ "$running" -eq "$containers" ] || { echo "only $running of $containers running" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# (a) one sample of all 50, wall time in ms.
walls=()
for _ in $(seq "$runs"); do
  t0=$(now)
  "$bin/berth-stats" --root "$root" --no-stream --interval 0 --format json >/dev/null
  t1=$(now)
  walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) * 1000}')")
done
sample_ms=$(median "${walls[@]}")

# (b) a 1 Hz stream: CPU ticks used over the stream's life, read from
# /proc just before it is stopped (utime + stime, fields 14 and 15).
ticks_per_sec=$(getconf CLK_TCK)
"$bin/berth-stats" --root "$root" --interval 1 --format json >/dev/null &
stream_pid=$!
t0=$(now)
sleep "$stream"
stat=$(cat "/proc/$stream_pid/stat")
t1=$(now)
kill "$stream_pid"; wait "$stream_pid" 2>/dev/null || true; stream_pid=""
# Fields after the command name, which is in parentheses.
rest=${stat##*) }
read -r -a f <<<"$rest"
# f[0] is field 3 (state): utime is field 14 -> f[11], stime 15 -> f[12].
cpu_ticks=$(( f[11] + f[12] ))
stream_pct=$(awk -v t="$cpu_ticks" -v hz="$ticks_per_sec" -v a="$t0" -v b="$t1" \
  'BEGIN {printf "%.2f", t / hz / (b - a) * 100}')

echo "berth-stats, $containers running containers, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(a) one sample (--no-stream --interval 0): median ${sample_ms} ms of $runs runs   (goal < 50 ms)"
echo "    runs: ${walls[*]}"
echo "(b) 1 Hz stream for ${stream}s: ${stream_pct}% of a core (${cpu_ticks} ticks at ${ticks_per_sec} Hz)   (goal < 2%)"
