#!/usr/bin/env bash
# Runs an S3-compatible object store on loopback for the tests: moto's server
# (PyPI `moto[server]`, with boto3), installed into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/gateway-test/s3 when missing.
#   scripts/s3-server.sh start   # serve on 127.0.0.1:$S3_TEST_PORT (9333) unless
#                                # something answers there already, then create
#                                # the bucket $S3_TEST_BUCKET (gateway-test)
#   scripts/s3-server.sh stop    # stop the server this script started there
# Idempotent and safe to call concurrently. moto keeps objects in memory only
# (a restart starts empty) and takes any access key/secret; clients use region
# us-east-1 and path-style URLs. Pid and log files (one per port) sit in the
# cache dir.
set -euo pipefail
dir="${XDG_CACHE_HOME:-$HOME/.cache}/gateway-test/s3"
venv="$dir/venv"
port="${S3_TEST_PORT:-9333}"
bucket="${S3_TEST_BUCKET:-gateway-test}"
url="http://127.0.0.1:$port"
pidfile="$dir/server-$port.pid"
log="$dir/server-$port.log"

answers() { curl -s -o /dev/null --max-time 2 "$url/"; }

# The pid from the pid file, if that process is still our moto server.
our_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *moto.server* ]] || return 1
  echo "$pid"
}

install_moto() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c \
    'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("moto", "flask", "flask_cors", "boto3")))' 2>/dev/null; then
    return
  fi
  echo "installing moto[server] into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' boto3
}

start() {
  install_moto
  if ! answers; then
    # Requests without an AWS signature are routed to S3; keys are never checked.
    # fd 9 (the lock) is closed for the server so that it does not hold the lock.
    nohup "$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + 30))
    until answers; do
      if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "S3 test server did not answer on $url; its log ($log):" >&2
        cat "$log" >&2 || true
        stop >/dev/null
        exit 1
      fi
      sleep 0.3
    done
  fi
  # Creating a bucket that exists answers 200 in us-east-1 (409 elsewhere): both fine.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT "$url/$bucket")
  case "$code" in
    200|409) ;;
    *) echo "creating bucket $bucket on $url failed: HTTP $code" >&2; exit 1 ;;
  esac
  echo "S3 test server: $url bucket $bucket"
}

stop() {
  local pid
  if pid=$(our_pid); then
    kill "$pid"
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "S3 test server stopped"
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start|stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9
"$1"
