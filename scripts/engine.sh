#!/usr/bin/env bash
# A private Docker engine for building and testing the images: Debian's docker.io, its own data
# root, socket and pid file under .engine/ (nothing else on the machine is touched: no
# /var/run/docker.sock, no /var/lib/docker, no iptables rules).
#
#   scripts/engine.sh start     install docker.io (and debootstrap) when missing, start dockerd
#   scripts/engine.sh stop      stop the dockerd that `start` started
#   scripts/engine.sh env       print `export DOCKER_HOST=...` for this engine
#   scripts/engine.sh status    exit 0 when the engine answers
#
# The client is the docker.io package's own /usr/bin/docker: a newer CLI earlier on PATH may lack
# the classic builder's BuildKit support that the Dockerfiles use (RUN --mount=type=secret).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${KUBEFLOWER_ENGINE_DIR:-$PWD/.engine}
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
DOCKER=/usr/bin/docker
export DOCKER_HOST="unix://$SOCK"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

answers() { [ -S "$SOCK" ] && "$DOCKER" version >/dev/null 2>&1; }

install() {
  local missing=""
  [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing="$missing docker.io"
  command -v debootstrap >/dev/null || missing="$missing debootstrap"
  if [ -n "$missing" ]; then
    echo "engine: installing$missing (Debian packages)" >&2
    as_root apt-get update -q
    # --no-install-recommends: no containerd shims or services we do not start.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  fi
  # The package's own service would take /var/run/docker.sock; this project never uses it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
    echo "engine: note: the machine's own docker service runs too; this engine is separate" >&2
  fi
}

start() {
  if answers; then return 0; fi
  install
  mkdir -p "$STATE/data" "$STATE/exec"
  # --iptables=false --ip6tables=false: no NAT and no FORWARD policy change, so the tests' own
  # network namespaces keep working; containers reach each other on a bridge network, and image
  # builds use the host's network (--network host). --bridge=none: no default docker0.
  as_root /usr/sbin/dockerd \
    --data-root "$STATE/data" --exec-root "$STATE/exec" \
    --host "$DOCKER_HOST" --pidfile "$PIDFILE" \
    --iptables=false --ip6tables=false --bridge=none \
    >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 120); do
    if answers; then echo "engine: up at $DOCKER_HOST (data under $STATE/data)" >&2; return 0; fi
    sleep 0.5
  done
  echo "engine: dockerd did not answer within 60 s; its log:" >&2
  tail -n 30 "$STATE/dockerd.log" >&2
  return 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid=$(cat "$PIDFILE")
  as_root kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  rm -f "$PIDFILE"
  # dockerd leaves its default network namespace bind-mounted under the exec root.
  for m in "$STATE"/exec/netns/*; do [ -e "$m" ] && as_root umount "$m" 2>/dev/null; done
  echo "engine: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  status) answers ;;
  *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac
