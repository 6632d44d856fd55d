"""`kubeflower-client`: a client pod's entry point, which becomes `flower-supernode`.

The partition id is the pod's StatefulSet ordinal (KUBEFLOWER_POD_NAME), unless
KUBEFLOWER_PARTITION_ID sets it; the number of partitions is the replica count. The process
replaces itself with the SuperNode (exec), so the pod's signals reach Flower directly; the
SuperNode retries the SuperLink until it answers, so clients may start before the server.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from kubeflower import contract
from kubeflower.workload import processes

LOG = logging.getLogger("kubeflower-client")


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
        if explicit:
            partition_id = int(explicit)
        else:
            partition_id = contract.ordinal_from_pod_name(env.get(contract.ENV_POD_NAME, ""))
        port = int(env.get(contract.ENV_SUPERNODE_PORT) or contract.SUPERNODE_PORT)
    except ValueError as exc:
        raise SettingsError(
            f"{exc}; set {contract.ENV_NUM_PARTITIONS} and {contract.ENV_POD_NAME} (or {contract.ENV_PARTITION_ID}) "
            "to whole numbers / a StatefulSet pod name"
        ) from None
    if not 0 <= partition_id < num_partitions:
        raise SettingsError(f"partition id {partition_id} is outside 0..{num_partitions - 1} ({contract.ENV_NUM_PARTITIONS})")
    return [
        "flower-supernode",
        "--insecure",
        "--superlink", superlink,
        "--port", str(port),
        "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
    ]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        command = supernode_command(os.environ)
    except SettingsError as exc:
        LOG.error("cannot start: %s (these variables are set by the operator; see kubeflower.contract)", exc)
        return 2
    LOG.info("starting: %s", " ".join(command))
    sys.stdout.flush()
    superlink_host = os.environ[contract.ENV_SUPERLINK].rpartition(":")[0].strip("[]")
    os.execvpe(command[0], command, processes.child_env(direct=[superlink_host]))


if __name__ == "__main__":
    sys.exit(main())
