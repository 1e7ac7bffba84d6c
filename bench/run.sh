#!/usr/bin/env bash
# Container start-to-exit latency, in the same run, alternating:
#   berth-run --rm IMAGE /bin/true         (built-in runtime, and --runtime runc)
#   runc run on a prepared bundle          (no image, no snapshot, no metadata)
#   crun run on the same bundle            (where the host allows it)
#   podman run --rm --runtime runc         (where podman is installed)
# Everything lives on a tmpfs so the disk does not decide the result.
#   bench/run.sh [RUNS]      (default 20)
# Prints the medians and the ratios (berth / runc: < 1.2 is the goal).
set -euo pipefail
runs=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
"$top/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$top/Cargo.toml" --bins
bin=$top/target/release

work=$(mktemp -d /tmp/berth-bench-run.XXXXXX)
registry_pid=""
. "$here/lib.sh"
cleanup() {
  stop_registry
  runc --root "$work/fs/runc-state" delete -f bench-runc >/dev/null 2>&1 || true
  if command -v podman >/dev/null && [ -d "$work/fs/podman" ]; then
    podman --root "$work/fs/podman" --runroot "$work/fs/podman-run" --cgroup-manager=cgroupfs \
      --events-backend=file system reset -f >/dev/null 2>&1 || true
  fi
  umount "$work/fs/bundle/rootfs" 2>/dev/null || true
  if mountpoint -q "$work/fs"; then umount -l "$work/fs"; fi
  rm -rf "$work"
}
trap cleanup EXIT
serve_busybox "$work" "$top"

export BERTH_CONFIG=/dev/null
root=$work/fs/berth
"$bin/berth-pull" -q --root "$root" "$image" >/dev/null

# The bare bundle for runc/crun: the same image unpacked once, and the spec
# berth itself would write (minus the cgroup path, which runc picks).
mkdir -p "$work/fs/bundle/rootfs" "$work/fs/runc-state" "$work/fs/crun-state"
umoci unpack --image "$work/fs/layout:bench" "$work/fs/umoci" >/dev/null
mount --bind "$work/fs/umoci/rootfs" "$work/fs/bundle/rootfs"
(cd "$work/fs/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["root"]["readonly"] = False
json.dump(c, open("config.json", "w"))
PY
)

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {print b - a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

crun_ok=false
if command -v crun >/dev/null && crun --root "$work/fs/crun-state" run --bundle "$work/fs/bundle" bench-crun >/dev/null 2>&1; then
  crun_ok=true
fi
# podman on the same tmpfs, cgroupfs (no systemd here), and ulimits it may
# set: its defaults ask for more than root's hard limits on this kind of
# host. Pulled once first, so runs compare container starts.
podman_ok=false
podman=(podman --root "$work/fs/podman" --runroot "$work/fs/podman-run" --cgroup-manager=cgroupfs
        --events-backend=file)
podman_run=("${podman[@]}" run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
if command -v podman >/dev/null \
   && "${podman[@]}" pull -q --tls-verify=false "$image" >/dev/null 2>&1 \
   && "${podman_run[@]}" "$image" /bin/true >/dev/null 2>&1; then
  podman_ok=true
fi

b=(); br=(); r=(); c=(); p=()
for i in $(seq "$runs"); do
  t0=$(now); "$bin/berth-run" --root "$root" --rm -q "$image" /bin/true; t1=$(now); b+=("$(elapsed "$t0" "$t1")")
  t0=$(now); "$bin/berth-run" --root "$root" --runtime runc --rm -q "$image" /bin/true; t1=$(now); br+=("$(elapsed "$t0" "$t1")")
  t0=$(now); runc --root "$work/fs/runc-state" run --bundle "$work/fs/bundle" bench-runc >/dev/null; t1=$(now); r+=("$(elapsed "$t0" "$t1")")
  if $crun_ok; then
    t0=$(now); crun --root "$work/fs/crun-state" run --bundle "$work/fs/bundle" bench-crun >/dev/null; t1=$(now); c+=("$(elapsed "$t0" "$t1")")
  fi
  if $podman_ok; then
    t0=$(now); "${podman_run[@]}" "$image" /bin/true >/dev/null; t1=$(now); p+=("$(elapsed "$t0" "$t1")")
  fi
  printf 'run %d: berth-run %.4fs  berth-run --runtime runc %.4fs  runc run %.4fs%s\n' "$i" "${b[-1]}" "${br[-1]}" "${r[-1]}" \
    "$($podman_ok && printf '  podman run %.4fs' "${p[-1]}")"
done
mb=$(median "${b[@]}"); mbr=$(median "${br[@]}"); mr=$(median "${r[@]}")
printf 'median: berth-run %.4fs  berth-run --runtime runc %.4fs  runc run (bare bundle) %.4fs\n' "$mb" "$mbr" "$mr"
printf 'ratio berth-run/runc-run %.2fx (goal <= 1.2x)\n' "$(awk -v a="$mb" -v b="$mr" 'BEGIN {print a / b}')"
if $crun_ok; then
  printf 'crun run (bare bundle) %.4fs\n' "$(median "${c[@]}")"
else
  echo "crun: cannot run containers on this host (e.g. hybrid cgroups); no crun comparison"
fi
if $podman_ok; then
  mp=$(median "${p[@]}")
  printf 'podman run --rm --runtime runc %.4fs  ratio podman/berth-run %.2fx (goal >= 4x)\n' "$mp" "$(awk -v a="$mp" -v b="$mb" 'BEGIN {print a / b}')"
else
  echo "podman: not installed or cannot run containers here (apt-get install podman); no podman comparison"
fi
