#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests that drive the real
# binaries against real registries started on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets -- "$@"
