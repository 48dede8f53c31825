#!/usr/bin/env bash
# Builds the end users' web page (web/, Vite + TypeScript + Preact) into
# web/dist, which the next cargo build of the gateway embeds (gateway/build.rs).
# Installs Debian's nodejs and npm first when npm is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "build-web: npm not found; installing Debian's nodejs and npm" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends nodejs npm
fi

cd web
# The browser tests' Playwright is a dev dependency: the build needs none of
# its browsers.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
npm run build
echo "build-web: built web/dist ($(ls dist/assets 2>/dev/null | wc -l) assets)" >&2
