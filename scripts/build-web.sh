#!/usr/bin/env bash
# Builds the end users' web page (web/, Vite + TypeScript + Preact) into
# web/dist, which the next cargo build of the gateway embeds (gateway/build.rs).
# Installs Debian's nodejs and npm first when npm is missing, and a Node.js
# from the npm registry (into target/node) when the machine's is older than
# Vite needs. Nothing is rebuilt when the page's sources and lockfile are
# those of the last build, so the gateway is not rebuilt either.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "build-web: npm not found; installing Debian's nodejs and npm" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends nodejs npm
fi

# Vite 8 needs Node.js 20.19 or later (Debian 12 ships 18).
node_ok() {
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'
}
if ! node_ok; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "build-web: Node.js $(node --version) is too old for Vite (20.19 or later needed)" >&2; exit 1 ;;
  esac
  local_node="$PWD/target/node/node_modules/node-linux-$arch/bin"
  if [ ! -x "$local_node/node" ]; then
    echo "build-web: Node.js $(node --version) is too old for Vite; installing Node.js 22 from the npm registry into target/node" >&2
    npm install --no-audit --no-fund --prefix target/node "node-linux-$arch@22"
  fi
  export PATH="$local_node:$PATH"
  node_ok || { echo "build-web: Node.js $(node --version) is still too old for Vite" >&2; exit 1; }
fi

# What the build reads; the same as last time: nothing to do.
stamp_file=target/web-build.sha256
stamp=$(find web/src web/public web/index.html web/package.json web/package-lock.json \
  web/tsconfig.json web/vite.config.ts -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f web/dist/index.html ] && [ -d web/node_modules ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
  echo "build-web: web/dist is up to date" >&2
  exit 0
fi

cd web
# The browser tests' Playwright is a dev dependency: the build needs none of
# its browsers.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
npm run build
cd ..
mkdir -p target
echo "$stamp" >"$stamp_file"
echo "build-web: built web/dist ($(ls web/dist/assets 2>/dev/null | wc -l) assets)" >&2
