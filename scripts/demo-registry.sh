#!/usr/bin/env bash
# Starts (or stops) a local registry on 127.0.0.1 holding the busybox demo
# image as demo/busybox:latest.
#   scripts/demo-registry.sh start   # prints the image reference
#   scripts/demo-registry.sh stop
# Port: BERTH_DEMO_PORT (default 5000). State: /tmp/berth-demo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=${BERTH_DEMO_PORT:-5000}
state=/tmp/berth-demo
image=127.0.0.1:$port/demo/busybox:latest

stop() {
  if [ -f "$state/registry.pid" ]; then
    kill "$(cat "$state/registry.pid")" 2>/dev/null || true
    rm -f "$state/registry.pid"
  fi
}

case "${1:-start}" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: demo-registry.sh start|stop" >&2; exit 2 ;;
esac

stop
mkdir -p "$state"
cat > "$state/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$state/config.yml" >"$state/registry.log" 2>&1 &
echo $! > "$state/registry.pid"
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$(cat "$state/registry.pid")" 2>/dev/null; then
    echo "demo-registry: the registry exited; is port $port taken? (set BERTH_DEMO_PORT)" >&2
    cat "$state/registry.log" >&2
    exit 1
  fi
  sleep 0.1
done
rm -rf "$state/layout"
"$here/demo-image.sh" "$state/layout" latest >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$state/layout:latest" "docker://$image" >&2
echo "$image"
