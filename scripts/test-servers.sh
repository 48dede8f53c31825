#!/usr/bin/env bash
# Installs the real IM servers and the stock clients the end-to-end tests
# run on loopback:
#   - Synapse (Matrix) from PyPI into target/test-servers/synapse-venv
#   - ejabberd (XMPP) from Debian's packages
#   - tuspy, the tus project's Python client, from PyPI into
#     target/test-servers/clients-venv (tests/clients/*.py run with it)
# The S3-compatible server (moto, from PyPI) is installed and started by
# scripts/s3-server.sh, which the tests that need it call themselves.
# Idempotent: does nothing when both are present. The tests start and stop
# their own instances (own config, free ports, temp dirs).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/test-servers
mkdir -p "$dir"

if [ ! -x "$dir/synapse-venv/bin/python" ] || ! "$dir/synapse-venv/bin/python" -c 'import synapse' 2>/dev/null; then
  echo "installing Synapse into $dir/synapse-venv"
  python3 -m venv "$dir/synapse-venv"
  "$dir/synapse-venv/bin/pip" install --quiet --disable-pip-version-check matrix-synapse
fi

TUSPY_VERSION=1.1.0
clients=$dir/clients-venv
if [ "$("$clients/bin/python" -c 'import importlib.metadata as m; print(m.version("tuspy"))' 2>/dev/null)" != "$TUSPY_VERSION" ]; then
  echo "installing tuspy $TUSPY_VERSION into $clients"
  python3 -m venv "$clients"
  "$clients/bin/pip" install --quiet --disable-pip-version-check "tuspy==$TUSPY_VERSION"
fi

if ! command -v ejabberdctl >/dev/null 2>&1 && [ ! -x /usr/sbin/ejabberdctl ]; then
  echo "installing ejabberd from Debian's packages"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ejabberd
fi
# The package may start a default instance; the tests run their own.
if pgrep -f 'beam.*ejabberd@' >/dev/null 2>&1 && [ -x /usr/sbin/ejabberdctl ]; then
  /usr/sbin/ejabberdctl stop >/dev/null 2>&1 || true
fi
echo "test servers: synapse $("$dir/synapse-venv/bin/python" -c 'import synapse; print(synapse.__version__)'), ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo '?')"
