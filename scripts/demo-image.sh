#!/usr/bin/env bash
# Builds a small OCI image from busybox-static into an OCI layout:
#   scripts/demo-image.sh LAYOUT_DIR [TAG]
# No network: the root filesystem is /bin/busybox and its applet links.
set -euo pipefail
layout=${1:?usage: demo-image.sh LAYOUT_DIR [TAG]}
tag=${2:-latest}
busybox=$(command -v busybox) || { echo "demo-image.sh: busybox-static is not installed" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --rootless --image "$layout:$tag" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
umoci repack --image "$layout:$tag" "$work/bundle" >/dev/null
umoci config --image "$layout:$tag" --config.cmd sh --config.env PATH=/bin >/dev/null
echo "$layout:$tag"
