#!/usr/bin/env bash
# Runs every check of the project: formatting, clippy, the whole test suite,
# and a schemathesis run against the OpenAPI document (scripts/fuzz-api.sh).
# Under CI=true the PostgreSQL runs are mandatory (TEST_DATABASE_URL defaults to
# the local server on 127.0.0.1:5432) and fail loudly when it cannot be used.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Plugins are WebAssembly components built for wasm32-wasip2 by the tests.
rustup target add wasm32-wasip2

# The real IM servers of the end-to-end tests (Synapse, ejabberd).
./scripts/test-servers.sh
# The end users' web page: the gateway embeds web/dist, and the web_assets
# test requires the real page under CI=true.
./scripts/build-web.sh
# The browser tests (tests/tests/web.rs) drive Debian's Chromium with
# Playwright from web/node_modules.
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing Debian's chromium for the browser tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium
fi

if [ "${CI:-}" = "true" ]; then
  export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL not answering on 127.0.0.1:5432; trying to start the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  echo "PostgreSQL tests: on (${TEST_DATABASE_URL%%@*}@...)"
else
  echo "PostgreSQL tests: off (set TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB to run them)"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
cargo fmt --manifest-path tests/fixtures/Cargo.toml --all -- --check
cargo fmt --manifest-path tests/fixtures/hostile-service/Cargo.toml -- --check
cargo fmt --manifest-path plugins/handoff/Cargo.toml -- --check
cargo fmt --manifest-path plugins/files/Cargo.toml -- --check
cargo fmt --manifest-path plugins/tasks/Cargo.toml -- --check
echo "== prettier --check (the web page's TypeScript and CSS)"
(cd web && npm run -s format:check)
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path plugins/Cargo.toml --target wasm32-wasip2 -- -D warnings
cargo clippy --manifest-path tests/fixtures/Cargo.toml --target wasm32-wasip2 -- -D warnings
cargo clippy --manifest-path tests/fixtures/hostile-service/Cargo.toml --target wasm32-wasip2 -- -D warnings
cargo clippy --manifest-path plugins/handoff/Cargo.toml --target wasm32-wasip2 -- -D warnings
cargo clippy --manifest-path plugins/files/Cargo.toml --target wasm32-wasip2 -- -D warnings
cargo clippy --manifest-path plugins/tasks/Cargo.toml --target wasm32-wasip2 -- -D warnings
echo "== cargo doc -p plugin-sdk (the connector authors' API reference)"
RUSTDOCFLAGS="-D warnings" cargo doc -p plugin-sdk --no-deps
echo "== cargo test (reference plugins, natively)"
cargo test --manifest-path plugins/Cargo.toml
cargo test --manifest-path plugins/handoff/Cargo.toml
cargo test --manifest-path plugins/files/Cargo.toml
cargo test --manifest-path plugins/tasks/Cargo.toml
echo "== cargo test"
cargo test --workspace
echo "== fuzzing the HTTP API from its OpenAPI document (schemathesis)"
# Mandatory under CI=true; elsewhere skipped, with a message, when PyPI
# cannot be reached.
./scripts/fuzz-api.sh
