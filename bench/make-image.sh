#!/usr/bin/env bash
# Builds a multi-layer OCI image layout for pull benchmarks.
#
#   bench/make-image.sh OUTDIR TAG
#
# The image: a busybox-static base layer, RANDOM_LAYERS layers of
# RANDOM_LAYER_MB MiB of random data each (incompressible: gzip keeps them
# that size on the wire), and one layer of SMALL_FILES small files. The
# defaults (4 x 40 MiB, 2000 files) give about 170 MB compressed. Random data
# comes from /dev/urandom, so each run gives new digests.
#
# Needs only coreutils, tar, gzip and /bin/busybox (busybox-static). JSON is
# written with printf. OUTDIR must not exist or be empty. Push the result
# with: skopeo copy oci:OUTDIR:TAG docker://127.0.0.1:PORT/repo:TAG
set -euo pipefail

usage() { echo "usage: $0 OUTDIR TAG" >&2; exit 2; }
[ $# -eq 2 ] || usage
out=$1
tag=$2
random_layers=${RANDOM_LAYERS:-4}
random_layer_mb=${RANDOM_LAYER_MB:-40}
small_files=${SMALL_FILES:-2000}
busybox=${BUSYBOX:-/bin/busybox}

if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    echo "$0: $out exists and is not empty" >&2
    exit 1
fi
[ -x "$busybox" ] || { echo "$0: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-make-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/blobs/sha256"

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Moves FILE into the layout's blob store; prints its hex digest.
add_blob() {
    local hex
    hex=$(sha256 "$1")
    mv "$1" "$out/blobs/sha256/$hex"
    echo "$hex"
}

layer_descriptors=()
diff_ids=()
history=()

# Adds the contents of DIR as a gzip layer, described by WHAT.
add_layer() {
    local dir=$1 level=$2 what=$3 tarfile="$work/layer.tar" diff_id hex
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
        -C "$dir" -cf "$tarfile" .
    diff_id=$(sha256 "$tarfile")
    gzip -n "-$level" "$tarfile"
    local gz_size
    gz_size=$(size "$tarfile.gz")
    hex=$(add_blob "$tarfile.gz")
    layer_descriptors+=("$(printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}' "$hex" "$gz_size")")
    diff_ids+=("\"sha256:$diff_id\"")
    history+=("$(printf '{"created":"1970-01-01T00:00:00Z","created_by":"make-image.sh: %s"}' "$what")")
    rm -rf "$dir"
    echo "layer $((${#diff_ids[@]})): sha256:$hex ($gz_size bytes)" >&2
}

join() { local IFS=,; echo "$*"; }

# 1. Base: busybox and its applets, minimal /etc.
base="$work/base"
mkdir -p "$base"/{bin,dev,etc,proc,sys,tmp,root,usr/bin,var}
chmod 1777 "$base/tmp"
chmod 700 "$base/root"
cp "$busybox" "$base/bin/busybox"
for applet in sh ls cat echo sleep true false env id mkdir rm touch pwd ps kill \
    hostname uname wc head grep stat date mount test; do
    ln -s busybox "$base/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$base/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$base/etc/group"
add_layer "$base" 6 "busybox base"

# 2. Random layers.
for i in $(seq 1 "$random_layers"); do
    dir="$work/random$i"
    mkdir -p "$dir/data"
    head -c "$((random_layer_mb * 1024 * 1024))" /dev/urandom >"$dir/data/random-$i.bin"
    add_layer "$dir" 1 "$random_layer_mb MiB random"
done

# 3. Many small files (2 KiB each, 100 per directory).
dir="$work/small"
mkdir -p "$dir/files"
head -c "$((small_files * 2048))" /dev/urandom | base64 -w 76 >"$work/small.txt"
(cd "$dir/files" && split -b 2048 -a 5 -d "$work/small.txt" f)
rm "$work/small.txt"
(
    cd "$dir/files"
    n=0
    for f in f*; do
        d=$(printf 'd%03d' $((n / 100)))
        mkdir -p "$d"
        mv "$f" "$d/"
        n=$((n + 1))
    done
)
add_layer "$dir" 6 "$small_files small files"

# Config, manifest, index.
arch=$(uname -m)
case "$arch" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
esac
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
    "$arch" "$(join "${diff_ids[@]}")" "$(join "${history[@]}")" >"$work/config.json"
config_size=$(size "$work/config.json")
config_hex=$(add_blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$config_hex" "$config_size" "$(join "${layer_descriptors[@]}")" >"$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest_hex=$(add_blob "$work/manifest.json")

printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_hex" "$manifest_size" "$tag" >"$out/index.json"

total=$(du -sb "$out/blobs" | cut -f1)
echo "$out:$tag manifest sha256:$manifest_hex, $total bytes of blobs" >&2
