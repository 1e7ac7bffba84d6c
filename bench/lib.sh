# Shared by the benchmarks (source it): a local registry on a free
# 127.0.0.1 port, and timing helpers.

# start_registry DIR: serves a registry whose storage is DIR/registry;
# sets $port and $registry_pid. The caller kills $registry_pid on exit.
start_registry() {
  local dir=$1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$dir/registry.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

# stop_registry: kills and reaps the registry start_registry started.
stop_registry() {
  if [ -n "${registry_pid:-}" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
}

now() { date +%s.%N; }

# serve_busybox WORK TOP: a 1 GiB tmpfs at WORK/fs (the caller unmounts it
# on exit), a registry on it, and the demo busybox image pushed there; sets
# $image (and start_registry's $port and $registry_pid).
serve_busybox() {
  local work=$1 top=$2
  mkdir -p "$work/fs"
  mount -t tmpfs -o size=1g tmpfs "$work/fs"
  start_registry "$work/fs"
  "$top/scripts/demo-image.sh" "$work/fs/layout" bench >/dev/null
  image=127.0.0.1:$port/bench/busybox:bench
  skopeo copy -q --dest-tls-verify=false "oci:$work/fs/layout:bench" "docker://$image"
}
