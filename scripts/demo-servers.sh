#!/usr/bin/env bash
# Demo IM networks for the README's "Try it: one change, three networks": a real
# Synapse (Matrix) on 127.0.0.1:18008, a real ejabberd (XMPP) on 127.0.0.1:15280,
# each with the account alice, and a webhook receiver on 127.0.0.1:18090 that
# prints every push. Prints the module manifests and bind bodies; Ctrl-C stops
# everything. Ports: DEMO_MATRIX_PORT, DEMO_XMPP_PORT, DEMO_HOOK_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test-servers.sh          # installs Synapse and ejabberd once
echo "building the demo servers (tests/examples/demo_servers.rs; the first build takes several minutes)" >&2
cargo build --quiet -p e2e-tests --example demo_servers
exec cargo run --quiet -p e2e-tests --example demo_servers
