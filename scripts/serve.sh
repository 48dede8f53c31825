#!/usr/bin/env bash
# Runs the gateway on its embedded default: SQLite in ./data, 127.0.0.1:8080.
# Extra arguments go to `gateway serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p gateway -- serve "$@"
