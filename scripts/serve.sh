#!/usr/bin/env bash
# Runs the gateway on its embedded default: SQLite in ./data, 127.0.0.1:8080.
# Also builds the bundled reference connectors (Matrix, XMPP, webhook) into
# plugins/target/wasm32-wasip2/release/*.wasm and the handoff, files and tasks
# services into plugins/{handoff,files,tasks}/target/wasm32-wasip2/release/, for the
# operator to upload, and the end users' web page into web/dist, which the
# gateway binary embeds and serves at /.
# Extra arguments go to `gateway serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
echo "building the reference connectors and the gateway (release; the first build takes about 10 minutes)" >&2
(cd plugins && cargo build --quiet --release --target wasm32-wasip2)
echo "reference connectors: $(ls plugins/target/wasm32-wasip2/release/*.wasm | tr '\n' ' ')" >&2
for service in handoff files tasks; do
  (cd "plugins/$service" && cargo build --quiet --release --target wasm32-wasip2)
  echo "$service service: plugins/$service/target/wasm32-wasip2/release/${service}_service.wasm" >&2
done
# The end users' web page, embedded in the gateway binary.
./scripts/build-web.sh >&2
cargo build --release -p gateway --bin gateway
# The reference files and handoff services are installed at start (again
# only when their plugin changed); the connectors need the operator's
# network settings, so the operator uploads them (README, "Quick start").
service() { echo "plugins/$1/manifest.json=plugins/$1/target/wasm32-wasip2/release/$1_service.wasm"; }
exec target/release/gateway serve \
  --install-service "$(service files)" --install-service "$(service handoff)" "$@"
