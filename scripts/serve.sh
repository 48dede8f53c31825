#!/usr/bin/env bash
# Runs the gateway on its embedded default: SQLite in ./data, 127.0.0.1:8080.
# Also builds the bundled reference connectors (Matrix, XMPP, webhook) into
# plugins/target/wasm32-wasip2/release/*.wasm and the handoff service into
# plugins/handoff/target/wasm32-wasip2/release/handoff_service.wasm, for the
# operator to upload.
# Extra arguments go to `gateway serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
echo "building the reference connectors and the gateway (release; the first build takes about 10 minutes)" >&2
(cd plugins && cargo build --quiet --release --target wasm32-wasip2)
echo "reference connectors: $(ls plugins/target/wasm32-wasip2/release/*.wasm | tr '\n' ' ')" >&2
(cd plugins/handoff && cargo build --quiet --release --target wasm32-wasip2)
echo "handoff service: plugins/handoff/target/wasm32-wasip2/release/handoff_service.wasm" >&2
cargo build --release -p gateway --bin gateway
exec target/release/gateway serve "$@"
