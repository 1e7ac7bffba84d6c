#!/usr/bin/env bash
# Pushes of a multi-layer image (>= 150 MB compressed) to an EMPTY registry
# on 127.0.0.1, alternating, in the same run, on a tmpfs so the disk does
# not decide the result:
#   berth-push IMAGE DEST      (the store pulled once beforehand, on the tmpfs)
#   skopeo copy oci:LAYOUT:TAG docker://DEST   (the same image's OCI layout)
# Each push gets a freshly started registry with empty storage.
#   bench/push.sh [RUNS]      (default 5)
# Prints each run, the medians and the ratio skopeo/berth (>1: berth faster).
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
"$top/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bin berth-pull --bin berth-push
pull=$top/target/release/berth-pull
push=$top/target/release/berth-push

work=$(mktemp -d /tmp/berth-bench-push.XXXXXX)
registry_pid=""
. "$here/lib.sh"
cleanup() {
  stop_registry
  if mountpoint -q "$work/fs"; then umount "$work/fs"; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/fs"
mount -t tmpfs -o size=4g tmpfs "$work/fs"

# fresh_registry: a registry on a new port with empty storage.
fresh_registry() {
  stop_registry
  rm -rf "$work/fs/reg"
  mkdir -p "$work/fs/reg"
  start_registry "$work/fs/reg"
}

echo "bench: building the test image" >&2
"$here/make-image.sh" "$work/fs/layout" bench >/dev/null
size=$(du -sb "$work/fs/layout/blobs" | cut -f1)
fresh_registry
source=127.0.0.1:$port/bench/big:bench
skopeo copy -q --dest-tls-verify=false "oci:$work/fs/layout:bench" "docker://$source"
"$pull" -q --no-unpack --root "$work/fs/berth" "$source" >/dev/null
echo "bench: image $source, $((size / 1000000)) MB of blobs, pulled into the berth store" >&2

berth_times=(); skopeo_times=()
for i in $(seq "$runs"); do
  fresh_registry
  sync
  t0=$(now); "$push" -q --root "$work/fs/berth" "$source" "127.0.0.1:$port/bench/big:bench" >/dev/null; t1=$(now)
  b=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  fresh_registry
  sync
  t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/fs/layout:bench" "docker://127.0.0.1:$port/bench/big:bench"; t1=$(now)
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  berth_times+=("$b"); skopeo_times+=("$s")
  printf 'run %d: berth-push %.3fs  skopeo copy %.3fs\n' "$i" "$b" "$s"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mb=$(median "${berth_times[@]}"); ms=$(median "${skopeo_times[@]}")
printf 'median: berth-push %.3fs  skopeo copy %.3fs  ratio skopeo/berth %.2fx\n' "$mb" "$ms" "$(awk -v s="$ms" -v b="$mb" 'BEGIN {print s / b}')"
