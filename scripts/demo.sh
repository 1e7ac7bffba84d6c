#!/usr/bin/env bash
# A newcomer's first command: installs what berth needs, builds and installs
# the berth binaries, starts a local registry with a busybox demo image,
# pulls it with berth, and runs a container from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
bindir=${BERTH_BINDIR:-/usr/local/bin}
[ -w "$bindir" ] || bindir=$HOME/.local/bin
mkdir -p "$bindir"
for b in target/release/berth target/release/berth-*; do
  [ -x "$b" ] && [ -f "$b" ] && [[ "$b" != *.d ]] && install -m 0755 "$b" "$bindir/"
done
echo "demo: installed berth binaries into $bindir" >&2
image=$(scripts/demo-registry.sh start)
echo "demo: registry running with $image (stop it: scripts/demo-registry.sh stop)" >&2
"$bindir/berth" pull "$image"
"$bindir/berth" run --rm "$image" sh -c 'echo "hello from container $(hostname): $(uname -sr), pid $$"'
