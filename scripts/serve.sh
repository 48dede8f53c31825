#!/usr/bin/env bash
# Runs the gateway on its embedded default: SQLite in ./data, 127.0.0.1:8080.
# Also builds the bundled reference connectors (Matrix, XMPP, webhook) into
# plugins/target/wasm32-wasip2/release/*.wasm and the handoff, files and tasks
# services into plugins/{handoff,files,tasks}/target/wasm32-wasip2/release/,
# and the end users' web page into web/dist, which the gateway binary embeds
# and serves at /.
# Installed at start: the files and handoff services, and the three
# connectors set up for the demo networks on loopback
# (./scripts/demo-servers.sh; the same DEMO_*_PORT variables). An operator's
# own manifest for a module, uploaded later, stays across restarts;
# SERVE_MODULES=none installs no connector.
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
# The reference services and connectors are installed at start (again only
# when their plugin changed).
service() { echo "plugins/$1/manifest.json=plugins/$1/target/wasm32-wasip2/release/$1_service.wasm"; }
install=(--install-service "$(service files)" --install-service "$(service handoff)")
if [ "${SERVE_MODULES:-demo}" != none ]; then
  matrix="http://127.0.0.1:${DEMO_MATRIX_PORT:-18008}"
  xmpp="http://127.0.0.1:${DEMO_XMPP_PORT:-15280}"
  hook="http://127.0.0.1:${DEMO_HOOK_PORT:-18090}"
  limit='"rate_limit":{"per_second":5,"burst":10}'
  manifests=target/demo-modules
  mkdir -p "$manifests"
  cat >"$manifests/matrix.json" <<JSON
{"id":"matrix","name":"Matrix","allowed_hosts":["$matrix"],$limit,"config":{"homeserver":"$matrix"},"detect":$(cat plugins/matrix/detect.json)}
JSON
  cat >"$manifests/xmpp.json" <<JSON
{"id":"xmpp","name":"XMPP","allowed_hosts":["$xmpp"],$limit,"config":{"api":"$xmpp/api","admin_user":"admin@localhost","admin_password":"demo-admin-pw"},"detect":$(cat plugins/xmpp/detect.json)}
JSON
  cat >"$manifests/webhook.json" <<JSON
{"id":"webhook","name":"Webhook","allowed_hosts":["$hook"],$limit,"config":{"url":"$hook/hook","secret":"demo-webhook-secret"}}
JSON
  for module in matrix xmpp webhook; do
    install+=(--install-module "$manifests/$module.json=plugins/target/wasm32-wasip2/release/${module}_connector.wasm")
  done
fi
exec target/release/gateway serve "${install[@]}" "$@"
