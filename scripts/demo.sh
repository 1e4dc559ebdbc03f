#!/usr/bin/env bash
# The main job on a local default, offline: a real local VM with a TLS Docker engine.
#   1. install pymachine and its tools (scripts/setup.sh)
#   2. pymachine create -d qemu dev   (builds pymachine's base image on first use: Debian 13
#      with the engine preinstalled, cached by recipe hash; then boots it under QEMU)
#   3. eval $(pymachine env dev); docker version   -> the docker CLI talks TLS to the VM
# Without KVM (nested VMs, CI) QEMU emulates the CPU: expect a few minutes.
#
#   scripts/demo.sh          the qemu VM (default)
#   scripts/demo.sh none     faster: a `none` machine fronting a private local dockerd
#   scripts/demo.sh stop     remove what the demo made
# Run as root (image build and dockerd need it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=/var/tmp/pymachine-demo
MODE=${1:-qemu}

case "$MODE" in
stop)
  [ -f "$RUN/dockerd.pid" ] && kill "$(cat "$RUN/dockerd.pid")" 2>/dev/null || true
  pymachine rm -y -f dev >/dev/null 2>&1 || true
  pymachine rm -y -f local >/dev/null 2>&1 || true
  echo "demo stopped"
  exit 0
  ;;
qemu)
  bash scripts/setup.sh
  if ! pymachine inspect dev >/dev/null 2>&1; then
    pymachine create -d qemu dev
  elif [ "$(pymachine status dev)" != "Running" ]; then
    pymachine start dev
  fi
  pymachine ls
  eval "$(pymachine env dev)"
  docker version
  ;;
none)
  bash scripts/setup.sh
  mkdir -p "$RUN"
  PORT=${PYMACHINE_DEMO_PORT:-23760}
  if ! pymachine inspect local >/dev/null 2>&1; then
    pymachine create -d none --url "tcp://127.0.0.1:$PORT" local
  fi
  MDIR=$(pymachine inspect -f '{{.HostOptions.AuthOptions.StorePath}}' local)
  if ! { [ -f "$RUN/dockerd.pid" ] && kill -0 "$(cat "$RUN/dockerd.pid")" 2>/dev/null; }; then
    echo "starting dockerd on 127.0.0.1:$PORT with local's server certificate (log: $RUN/dockerd.log)" >&2
    dockerd --data-root "$RUN/data" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
      --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
      -H "unix://$RUN/docker.sock" -H "tcp://127.0.0.1:$PORT" \
      --tlsverify --tlscacert "$MDIR/ca.pem" --tlscert "$MDIR/server.pem" --tlskey "$MDIR/server-key.pem" \
      >"$RUN/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
      pymachine version local >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  pymachine ls
  eval "$(pymachine env local)"
  docker version
  ;;
*)
  echo "usage: scripts/demo.sh [qemu|none|stop]" >&2
  exit 1
  ;;
esac
