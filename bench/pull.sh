#!/usr/bin/env bash
# Cold pulls of a multi-layer image (>= 150 MB compressed) from a registry
# on 127.0.0.1, alternating, in the same run, on a tmpfs so the disk does
# not decide the result:
#   1. fetch only: berth-pull --no-unpack  vs  skopeo copy docker://… oci:DIR
#   2. pull + unpack: berth-pull (overlayfs)  vs  skopeo copy + umoci unpack,
#      and the floor: gzip -dc | tar -x of the same layers from local files
#   bench/pull.sh [RUNS]      (default 5)
# Prints each run, the medians and the ratios (>1: berth faster).
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
"$top/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bin berth-pull
pull=$top/target/release/berth-pull

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
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

start_registry "$work/fs"

echo "bench: building the test image" >&2
"$here/make-image.sh" "$work/fs/layout" bench >/dev/null
image=127.0.0.1:$port/bench/big:bench
skopeo copy -q --dest-tls-verify=false "oci:$work/fs/layout:bench" "docker://$image"
size=$(du -sb "$work/fs/layout/blobs" | cut -f1)
echo "bench: image $image, $((size / 1000000)) MB of blobs in the layout" >&2

berth_times=(); skopeo_times=()
for i in $(seq "$runs"); do
  rm -rf "$work/fs/berth" "$work/fs/oci"
  sync
  t0=$(now); "$pull" -q --no-unpack --root "$work/fs/berth" "$image" >/dev/null; t1=$(now)
  b=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/fs/oci:bench"; t1=$(now)
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  berth_times+=("$b"); skopeo_times+=("$s")
  printf 'run %d: berth-pull %.3fs  skopeo copy %.3fs\n' "$i" "$b" "$s"
done
echo "--- pull + unpack" >&2
layers=$(python3 -c '
import json, sys
d = sys.argv[1]
idx = json.load(open(d + "/index.json"))
m = json.load(open(d + "/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
print(" ".join(l["digest"].split(":")[1] for l in m["layers"]))' "$work/fs/layout")
unpack_times=(); umoci_times=(); floor_times=()
for i in $(seq "$runs"); do
  rm -rf "$work/fs/berth" "$work/fs/oci" "$work/fs/bundle" "$work/fs/floor"
  sync
  t0=$(now); "$pull" -q --root "$work/fs/berth" "$image" >/dev/null; t1=$(now)
  b=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/fs/oci:bench"
  umoci unpack --image "$work/fs/oci:bench" "$work/fs/bundle" >/dev/null
  t1=$(now)
  u=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  mkdir -p "$work/fs/floor"
  t0=$(now)
  for l in $layers; do gzip -dc "$work/fs/layout/blobs/sha256/$l" | tar -x -C "$work/fs/floor"; done
  t1=$(now)
  f=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  unpack_times+=("$b"); umoci_times+=("$u"); floor_times+=("$f")
  printf 'run %d: berth-pull+unpack %.3fs  skopeo+umoci %.3fs  gzip|tar floor %.3fs\n' "$i" "$b" "$u" "$f"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mb=$(median "${berth_times[@]}"); ms=$(median "${skopeo_times[@]}")
printf 'median: berth-pull %.3fs  skopeo copy %.3fs  ratio skopeo/berth %.2fx\n' "$mb" "$ms" "$(awk -v s="$ms" -v b="$mb" 'BEGIN {print s / b}')"
mb=$(median "${unpack_times[@]}"); mu=$(median "${umoci_times[@]}"); mf=$(median "${floor_times[@]}")
printf 'median: berth-pull+unpack %.3fs  skopeo+umoci %.3fs  gzip|tar floor %.3fs\n' "$mb" "$mu" "$mf"
printf 'ratio skopeo+umoci/berth %.2fx  berth/floor %.2fx\n' "$(awk -v s="$mu" -v b="$mb" 'BEGIN {print s / b}')" "$(awk -v f="$mf" -v b="$mb" 'BEGIN {print b / f}')"
if command -v podman >/dev/null; then
  echo "podman is installed but not benchmarked here (it keeps its own store)" >&2
else
  echo "podman: not installed on this machine; no podman comparison" >&2
fi
