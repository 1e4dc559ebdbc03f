#!/usr/bin/env bash
# The main job on a local default, offline: a machine whose engine runs on this computer.
#   1. install pymachine (scripts/setup.sh)
#   2. pymachine create -d none  -> store, CA, client and server certificates
#   3. start a private dockerd with that machine's server certificate (TLS on 127.0.0.1)
#   4. eval $(pymachine env local); docker version   -> the docker CLI talks TLS to it
# Run as root (dockerd needs it).  Stop it with: scripts/demo.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=/var/tmp/pymachine-demo
NAME=${PYMACHINE_DEMO_NAME:-local}
export PATH="$PWD/.venv/bin:$PATH"

if [ "${1:-}" = "stop" ]; then
  [ -f "$RUN/dockerd.pid" ] && kill "$(cat "$RUN/dockerd.pid")" 2>/dev/null || true
  pymachine rm -y "$NAME" >/dev/null 2>&1 || true
  echo "demo stopped"; exit 0
fi

bash scripts/setup.sh
mkdir -p "$RUN"
PORT=${PYMACHINE_DEMO_PORT:-23760}
if ! pymachine inspect "$NAME" >/dev/null 2>&1; then
  pymachine create -d none --url "tcp://127.0.0.1:$PORT" "$NAME"
fi
MDIR=$(pymachine inspect -f '{{.HostOptions.AuthOptions.StorePath}}' "$NAME")
if ! { [ -f "$RUN/dockerd.pid" ] && kill -0 "$(cat "$RUN/dockerd.pid")" 2>/dev/null; }; then
  echo "starting dockerd on 127.0.0.1:$PORT with $NAME's server certificate (log: $RUN/dockerd.log)" >&2
  dockerd --data-root "$RUN/data" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
    --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    -H "unix://$RUN/docker.sock" -H "tcp://127.0.0.1:$PORT" \
    --tlsverify --tlscacert "$MDIR/ca.pem" --tlscert "$MDIR/server.pem" --tlskey "$MDIR/server-key.pem" \
    >"$RUN/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    [ -S "$RUN/docker.sock" ] && pymachine ls -q --filter "name=^$NAME\$" >/dev/null && \
      pymachine version "$NAME" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
pymachine ls
eval "$(pymachine env "$NAME")"
docker version
