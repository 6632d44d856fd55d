#!/usr/bin/env bash
# Run a command with a Docker engine for the images: the one DOCKER_HOST (or the default socket)
# names when it answers; else the project's own (scripts/engine.sh), started for the command and
# stopped after it. Where none can be had (no engine, not root and no sudo), the command still
# runs, with KUBEFLOWER_NO_ENGINE saying why: the image tests then skip with that reason, except
# under KUBEFLOWER_REQUIRE_IMAGES=1 (CI), where they fail.
set -uo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-/usr/bin/docker}
started=0
if [ -x "$DOCKER" ] && "$DOCKER" version >/dev/null 2>&1; then
  echo "with-engine: using the engine at ${DOCKER_HOST:-the default socket}" >&2
elif scripts/engine.sh status; then
  eval "$(scripts/engine.sh env)"
elif [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
  scripts/engine.sh start || exit 1
  eval "$(scripts/engine.sh env)"
  started=1
else
  export KUBEFLOWER_NO_ENGINE="no Docker engine answers, and scripts/engine.sh needs root (or sudo) to install and start one"
  echo "with-engine: $KUBEFLOWER_NO_ENGINE" >&2
fi
"$@"
rc=$?
if [ "$started" = 1 ]; then scripts/engine.sh stop; fi
exit $rc
