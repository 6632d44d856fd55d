#!/usr/bin/env bash
# Run a command with the project's Docker engine (scripts/engine.sh): start it when it is not up,
# export DOCKER_HOST, run the command, and stop the engine again if this script started it.
# Where no engine can be had (not root and no sudo, no apt), the command still runs, with
# KUBEFLOWER_NO_ENGINE saying why: the image tests then skip with that reason, except under
# KUBEFLOWER_REQUIRE_IMAGES=1 (CI), where they fail.
set -uo pipefail
cd "$(dirname "$0")/.."
started=0
if scripts/engine.sh status; then :
elif [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
  scripts/engine.sh start || exit 1
  started=1
else
  export KUBEFLOWER_NO_ENGINE="no Docker engine: scripts/engine.sh needs root (or sudo) to install and start dockerd"
  echo "with-engine: $KUBEFLOWER_NO_ENGINE" >&2
fi
eval "$(scripts/engine.sh env)"
"$@"
rc=$?
if [ "$started" = 1 ]; then scripts/engine.sh stop; fi
exit $rc
