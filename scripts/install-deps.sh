#!/usr/bin/env bash
# Installs the Debian packages berth's demo, tests and benchmarks use.
# Idempotent: does nothing when everything is there already.
set -euo pipefail
packages=(docker-registry skopeo umoci busybox-static runc crun apache2-utils python3-prometheus-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package's own service (port 5000, htpasswd auth) is not what we want;
# tests and the demo start registries of their own.
if command -v invoke-rc.d >/dev/null && pgrep -x docker-registry >/dev/null 2>&1; then
  invoke-rc.d docker-registry stop >/dev/null 2>&1 || true
fi
