"""`kubeflower-client`: a client pod's entry point, which runs `flower-supernode`.

The partition id is the pod's StatefulSet ordinal (KUBEFLOWER_POD_NAME), unless
KUBEFLOWER_PARTITION_ID sets it; the number of partitions is the replica count when the clients
were made, fixed for the job's life: a client added by a scale up (an ordinal past it) trains on
partition ordinal mod partitions, beside the client that already has it. The SuperNode
retries the SuperLink until it answers, so clients may start before the server.

The entry point stays the SuperNode's parent rather than exec'ing it: the SuperNode's SuperExec
runs in a session of its own and leaves only when it sees its parent gone, which it cannot see
while the dead SuperNode is an unreaped zombie (the lot of an orphan where PID 1 does not reap,
as in a container whose PID 1 is Flower). So this process, a subreaper, stops the SuperNode on
SIGTERM and then ends whatever is left below it; it exits with the SuperNode's exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from kubeflower.core import contract
from kubeflower_workload import BUILTIN_APP, clientapp_shim, processes
from kubeflower_workload.warm import PreloadError, WarmClientApps, preload_modules

LOG = logging.getLogger("kubeflower-client")
STOP_GRACE = 10.0


class SettingsError(Exception):
    """The environment does not say which SuperLink or which partition."""


def supernode_command(env: Mapping[str, str]) -> list[str]:
    """The `flower-supernode` command line for this client."""
    superlink = env.get(contract.ENV_SUPERLINK)
    if not superlink:
        raise SettingsError(f"{contract.ENV_SUPERLINK} is not set (host:port of the SuperLink)")
    try:
        num_partitions = int(env.get(contract.ENV_NUM_PARTITIONS, ""))
        explicit = env.get(contract.ENV_PARTITION_ID)
        ordinal = None if explicit else contract.ordinal_from_pod_name(env.get(contract.ENV_POD_NAME, ""))
        partition_id = int(explicit) if explicit else int(ordinal or 0) % max(num_partitions, 1)
        port = int(env.get(contract.ENV_SUPERNODE_PORT) or contract.SUPERNODE_PORT)
    except ValueError as exc:
        raise SettingsError(
            f"{exc}; set {contract.ENV_NUM_PARTITIONS} and {contract.ENV_POD_NAME} (or {contract.ENV_PARTITION_ID}) "
            "to whole numbers / a StatefulSet pod name"
        ) from None
    if ordinal is not None and ordinal >= num_partitions > 0:
        LOG.info("client %d was added by a scale up: it trains on partition %d", ordinal, partition_id)
    if not 0 <= partition_id < num_partitions:
        raise SettingsError(
            f"partition id {partition_id} is outside 0..{num_partitions - 1} ({contract.ENV_NUM_PARTITIONS})"
        )
    health = env.get(contract.ENV_HEALTH_ADDRESS)
    return [
        "flower-supernode",
        "--insecure",
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        f"partition-id={partition_id} num-partitions={num_partitions}",
        *(["--health-server-address", health] if health else []),
    ]


def warm_setting(env: Mapping[str, str], command: list[str]) -> tuple[bool, str]:
    """Whether this client forks its ClientApps, and why (for the log)."""
    value = env.get(contract.ENV_WARM_CLIENTAPPS, "true").strip().lower()
    if value not in ("true", "false"):
        raise SettingsError(f"{contract.ENV_WARM_CLIENTAPPS} must be true or false, not {value!r}")
    if value == "false":
        return False, f"{contract.ENV_WARM_CLIENTAPPS}=false (spec.clients.warmClientApps)"
    if flag := next((f for f in clientapp_shim.COLD_ONLY_FLAGS if f in command), None):
        return False, f"the SuperNode runs with {flag}"
    return True, "on"


def app_dir(env: Mapping[str, str]) -> Path:
    """The job's Flower App project: the user's (KUBEFLOWER_APP_PATH) or the built-in one."""
    path = env.get(contract.ENV_APP_PATH)
    return Path(path) if path else BUILTIN_APP


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        command = supernode_command(os.environ)
        warm_on, why = warm_setting(os.environ, command)
    except SettingsError as exc:
        LOG.error("cannot start: %s (these variables are set by the operator; see kubeflower.core.contract)", exc)
        return 2
    try:
        preload = preload_modules(app_dir(os.environ)) if warm_on else []
    except PreloadError as exc:  # the app still runs; its modules are then imported in each message
        LOG.error("warm ClientApps pre-import Flower only: %s", exc)
        preload = []
    work_dir = os.environ.get(contract.ENV_WORK_DIR)
    if work_dir:  # the ClientApp's writable working directory: its processes inherit it
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        os.chdir(work_dir)
    LOG.info("starting: %s", " ".join(command))
    processes.become_subreaper()
    superlink_host = os.environ[contract.ENV_SUPERLINK].rpartition(":")[0].strip("[]")
    env = processes.child_env(direct=[superlink_host], superexec_poll=processes.NODE_SUPEREXEC_POLL_INTERVAL)
    warm = None
    if warm_on:
        try:
            warm = WarmClientApps.prepare(env, preload)
        except OSError as exc:
            why = str(exc)
    if warm is not None:
        env = warm.env
        warm.start()
    else:
        LOG.info("warm ClientApps off: %s", why)
    supernode = processes.start(command, env)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while supernode.poll() is None and not stop.wait(1.0):
            if warm is not None:
                warm.supervise()
        if stop.is_set():
            LOG.info("stopping the SuperNode")
            processes.stop(supernode, STOP_GRACE)
    finally:
        if warm is not None:
            warm.stop(STOP_GRACE)
        processes.kill_descendants()
    LOG.info("the SuperNode exited with code %s", supernode.returncode)
    return 0 if stop.is_set() else int(supernode.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
