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

It also starts the SuperNode again, in place, when the SuperNode lost its place at the SuperLink:
a server pod that restarts brings a new SuperLink, which knows the job's keys again (the server
registers them) but under new node ids. Flower's SuperNode keeps its old node id and never joins
again by itself: it ends on the SuperLink's 401 (it signals itself, exit 0) or, after an error
that ends its connection, would idle for ever (`kubeflower_workload.supernode` makes it end). A
new SuperNode joins the new SuperLink with the same key, so the restarted server's run finds its
clients without a pod restart (and without the kubelet's growing back-off).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from kubeflower.core import contract, keys
from kubeflower_workload import BUILTIN_APP, clientapp_shim, forkserver, processes, supernode
from kubeflower_workload.warm import PreloadError, WarmClientApps, preload_modules

LOG = logging.getLogger("kubeflower-client")
STOP_GRACE = 10.0
NOT_REGISTERED = b"Exit Code: 305"
"""What `flower-supernode` prints (its process exits with 1, as for any error) when it could not
join: with SuperNode authentication, mostly a key the SuperLink does not know (yet)."""
JOINED = b"SuperNode ID: "
"""What `flower-supernode` prints once the SuperLink activated it (its node id follows)."""
REGISTRATION_WAIT = 180.0
"""Seconds a client keeps starting its SuperNode again while it cannot join: the server registers
the job's keys once its SuperLink is up (again after a server restart), and a scale-up's new keys
once the kubelet has brought them into the server's mounted Secret (up to about a minute and a half)."""
RETRY_DELAY = 3.0


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
        # Its own key, its pod ordinal's: a client added by a scale up shares a partition, never a
        # key (Flower ties a node to its key; the operator adds the new ordinals' keys first).
        *security_flags(env, partition_id if ordinal is None else int(ordinal)),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        f"partition-id={partition_id} num-partitions={num_partitions}",
        *(["--health-server-address", health] if health else []),
    ]


def security_flags(env: Mapping[str, str], ordinal: int) -> list[str]:
    """TLS against the job's CA and this client's own authentication key (its ordinal's), or
    `--insecure` when the job turned security off (ClusterIP jobs only)."""
    security = env.get(contract.ENV_SECURITY) or contract.SECURITY_ENABLED
    if security == contract.SECURITY_DISABLED:
        return ["--insecure"]
    if security != contract.SECURITY_ENABLED:
        raise SettingsError(
            f"{contract.ENV_SECURITY} must be {contract.SECURITY_ENABLED} or {contract.SECURITY_DISABLED}"
        )
    folder = env.get(contract.ENV_CLIENT_KEYS_DIR)
    if not folder:
        raise SettingsError(f"{contract.ENV_CLIENT_KEYS_DIR} is not set (the folder of the job's client keys)")
    ca, key = Path(folder) / keys.CA_CERT, Path(folder) / keys.client_private_key_file(ordinal)
    missing = [str(p) for p in (ca, key) if not p.is_file()]
    if missing:
        raise SettingsError(
            f"missing key files {', '.join(missing)}: the job's Secret has no key for client {ordinal} yet"
        )
    return ["--root-certificates", str(ca), "--auth-supernode-private-key", str(key)]


class SuperNodeOutput(threading.Thread):
    """Relays the SuperNode's output to ours (the pod's log), noting whether it joined the SuperLink
    and whether it was refused activation."""

    def __init__(self, stream: IO[bytes], on_message: Callable[[], None] | None = None) -> None:
        super().__init__(name="supernode-output", daemon=True)
        self.stream = stream
        self.on_message = on_message
        """Called when the SuperNode logs that a message arrived for its ClientApp."""
        self.joined = False
        self.not_registered = False

    def run(self) -> None:
        for line in self.stream:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            self.joined = self.joined or JOINED in line
            self.not_registered = self.not_registered or NOT_REGISTERED in line
            if self.on_message is not None and forkserver.RECEIVED_LOG in line:
                self.on_message()


def why_start_again(code: int | None, joined: bool, not_registered: bool, may_wait: bool) -> str | None:
    """Why a SuperNode that ended by itself (not stopped by us) is started again, or None: the
    client then ends with its exit code.

    - It had joined and ended with CONNECTION_LOST, or with 0 (Flower signals itself on the
      SuperLink's 401: the SuperLink does not know its node id; a new SuperLink after a server
      restart): it lost its place; a new SuperNode joins with the same key. At once, every time:
      each time it had joined.
    - It could not join (Flower's 305: its key is not registered yet, or the SuperLink does not
      answer yet) while `may_wait`.
    """
    if joined and code in (0, supernode.CONNECTION_LOST):
        return "the SuperNode lost its place at the SuperLink (did the server restart?); starting a new one"
    if not_registered and may_wait:
        return "it could not join (the server may be starting, or not know this client's key yet); starting it again"
    return None


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


def superexec_setting(env: Mapping[str, str]) -> bool:
    """Whether warm ClientApps' fork server takes the SuperExec's role (the SuperNode's `--isolation process`)."""
    value = env.get(contract.ENV_WARM_SUPEREXEC, "true").strip().lower()
    if value not in ("true", "false"):
        raise SettingsError(f"{contract.ENV_WARM_SUPEREXEC} must be true or false, not {value!r}")
    return value == "true"


def runtime_api_address(command: list[str]) -> str:
    """Where the SuperNode of `command` serves its Runtime API: loopback (Flower's default host), its `--port`."""
    return f"127.0.0.1:{command[command.index('--port') + 1]}"


def app_dir(env: Mapping[str, str]) -> Path:
    """The job's Flower App project: the user's (KUBEFLOWER_APP_PATH) or the built-in one."""
    path = env.get(contract.ENV_APP_PATH)
    return Path(path) if path else BUILTIN_APP


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        command = supernode_command(os.environ)
        warm_on, why = warm_setting(os.environ, command)
        superexec = warm_on and superexec_setting(os.environ)
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
    LOG.info("starting: %s (through %s)", " ".join(command), supernode.__name__)
    processes.become_subreaper()
    superlink_host = os.environ[contract.ENV_SUPERLINK].rpartition(":")[0].strip("[]")
    env = processes.child_env(direct=[superlink_host], superexec_poll=processes.NODE_SUPEREXEC_POLL_INTERVAL)
    warm = None
    if warm_on:
        try:
            warm = WarmClientApps.prepare(env, preload, runtime_api_address(command) if superexec else None)
        except OSError as exc:
            why = str(exc)
    if warm is not None:
        env = warm.env
        warm.start()
        if superexec:  # no SuperExec: the fork server asks the SuperNode for messages itself
            command = [*command, "--isolation", "process"]
            LOG.info("warm ClientApps: the fork server takes the SuperExec's role (--isolation process)")
    else:
        LOG.info("warm ClientApps off: %s", why)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + REGISTRATION_WAIT
    try:
        while True:
            node = processes.start([*supernode.COMMAND, *command[1:]], env, subprocess.PIPE)
            assert node.stdout is not None
            output = SuperNodeOutput(node.stdout, warm.poke if warm is not None else None)
            output.start()
            while node.poll() is None and not stop.wait(1.0):
                if warm is not None:
                    warm.supervise()
            if stop.is_set():
                LOG.info("stopping the SuperNode")
                processes.stop(node, STOP_GRACE)
            output.join(STOP_GRACE)
            if stop.is_set():
                break
            again = why_start_again(node.returncode, output.joined, output.not_registered, time.monotonic() < deadline)
            if again is None:
                break
            LOG.info("the SuperNode exited with code %s: %s", node.returncode, again)
            # What the old SuperNode left (its SuperExec, ClientApps) would talk to the new one on
            # the same port; the warm fork server stays.
            processes.kill_descendants(keep=warm.pids() if warm is not None else ())
            if output.joined:
                deadline = time.monotonic() + REGISTRATION_WAIT
            if stop.wait(RETRY_DELAY):
                break
    finally:
        if warm is not None:
            warm.stop(STOP_GRACE)
        processes.kill_descendants()
    LOG.info("the SuperNode exited with code %s", node.returncode)
    # A SuperNode only ends by itself on an error, Flower's self-signalled exit 0 included.
    return 0 if stop.is_set() else int(node.returncode or 1)


if __name__ == "__main__":
    sys.exit(main())
