#!/usr/bin/env bash
# Runs the README's first command as a user would (./scripts/serve.sh, on a
# free port and a throw-away data dir), checks that the gateway answers
# /healthz and serves the built web page at /, then stops it with SIGTERM
# and checks that it exits 0.
# .ci/run calls this so the first command cannot break unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d)
out=$(mktemp)
trap 'kill -9 "$pid" 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
./scripts/serve.sh --listen 127.0.0.1:0 --data-dir "$data" >"$out" &
pid=$!
# The first build of the release binary takes minutes; the gateway prints
# "listening on http://..." as its first line once it serves.
for _ in $(seq 1 1800); do
  if grep -q '^listening on ' "$out"; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "check-serve: ./scripts/serve.sh exited before serving" >&2
    exit 1
  fi
  sleep 1
done
base=$(sed -n 's/^listening on //p' "$out" | head -n1)
if [ -z "$base" ]; then
  echo "check-serve: no 'listening on' line after 30 minutes" >&2
  exit 1
fi
health=$(curl -fsS "$base/healthz")
echo "check-serve: $base/healthz answered $health"
# The end users' web page: the real build (not build.rs's fallback page),
# under its Content-Security-Policy.
page_headers=$(mktemp)
page=$(curl -fsS -D "$page_headers" "$base/")
csp=$(tr -d '\r' <"$page_headers" | sed -n 's/^[Cc]ontent-[Ss]ecurity-[Pp]olicy: //p' | head -n1)
status_line=$(head -n1 "$page_headers" | tr -d '\r')
rm -f "$page_headers"
if [ -z "$csp" ]; then
  echo "check-serve: $base/ answered without a Content-Security-Policy header" >&2
  exit 1
fi
if ! grep -qi '<html' <<<"$page"; then
  echo "check-serve: $base/ did not answer HTML" >&2
  exit 1
fi
if grep -q 'web page was not built' <<<"$page"; then
  echo "check-serve: $base/ serves the fallback page: web/dist was not built into the gateway" >&2
  exit 1
fi
echo "check-serve: $base/ answered $status_line, HTML of the built web page (not the fallback), Content-Security-Policy: $csp"
# The bundled reference services, installed at start.
services=$(curl -fsS "$base/v1/services")
for id in files handoff; do
  if ! grep -q "\"id\":\"$id\"" <<<"$services"; then
    echo "check-serve: the bundled $id service is not installed: $services" >&2
    exit 1
  fi
done
echo "check-serve: $base/v1/services lists the bundled services: $services"
# The reference connectors, installed at start for the demo networks.
modules=$(curl -fsS "$base/v1/modules")
for id in matrix xmpp webhook; do
  if ! grep -q "\"id\":\"$id\"" <<<"$modules"; then
    echo "check-serve: the bundled $id connector is not installed: $modules" >&2
    exit 1
  fi
done
echo "check-serve: $base/v1/modules lists the bundled connectors"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" != 0 ]; then
  echo "check-serve: the gateway exited with $status after SIGTERM (expected 0)" >&2
  exit 1
fi
echo "check-serve: stopped cleanly (exit 0)"
