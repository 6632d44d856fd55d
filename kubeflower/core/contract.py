"""The environment contract between the operator's pods and the workload's entry points.

The operator's builders write these variables into the server and client containers; the
workload's entry points read them; `kubeflower run` sets them for local processes. Anything that
crosses that boundary is named here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Labels on every object the operator makes for a job (and on its pods): `kubectl get -l`.
JOB_LABEL = "kubeflower.io/job-name"
COMPONENT_LABEL = "app.kubernetes.io/component"

# Ports (container ports of the server pod, and of the Service).
SUPERLINK_PORT = 9092
"""The job's Flower port: the server pod's front proxy (`kubeflower_workload.frontproxy`), which
lets only the Fleet API through to the SuperLink."""
SUPERLINK_LOOPBACK_PORT = 9095
"""The SuperLink itself, on the server pod's loopback only: Flower 1.42 serves the Fleet, Control
and Runtime APIs on this one port, and its Control API has no authentication."""
STATUS_PORT = 8080
"""The server entry point's own HTTP port: GET /status, /metrics, /healthz."""
SUPERNODE_PORT = 9094
"""A SuperNode's local ClientAppIo port (pod-local; local mode gives each client its own)."""
SUPERNODE_HEALTH_PORT = 9095
"""A SuperNode's gRPC health server (grpc.health.v1), probed by the kubelet (liveness, readiness)."""

# The workload image's entry points (its console scripts): what the server and client containers run.
SERVER_COMMAND = ("kubeflower-server",)
CLIENT_COMMAND = ("kubeflower-client",)

# Paths inside the pods (emptyDir volumes: the root file system is read-only).
OUTPUT_DIR = "/var/lib/kubeflower/output"
DATA_DIR = "/var/lib/kubeflower/data"
FLWR_HOME = "/var/lib/kubeflower/flwr"
FINAL_STATUS_DIR = "/var/lib/kubeflower/final"
"""The server pod's view of its job's final status (a ConfigMap the operator writes when the job
finished, mounted optional): a server re-created after the end serves it instead of running again."""
FINAL_STATUS_KEY = "status.json"
TMP_DIR = "/tmp"
CACHE_DIR = "/var/lib/kubeflower/cache"
"""A client's own writable folder for the data sets it prepared (an emptyDir): where they go when
the data folder is the job's read-only data volume (`spec.data`)."""
POD_FOLDERS = {"output": OUTPUT_DIR, "data": DATA_DIR, "flwr-home": FLWR_HOME, "tmp": TMP_DIR, "cache": CACHE_DIR}
"""The pods' writable folders, by volume name: the root file system is read-only, and these
volumes (emptyDirs, or the job's output and data volumes in their place) are mounted over whatever
the image has at those paths."""
KEYS_ROOT = "/var/run/kubeflower"
TLS_DIR = f"{KEYS_ROOT}/tls"
"""The server's keys (a Secret, read-only): the job's CA certificate, the server certificate and
key, the clients' public keys to register (`kubeflower.core.keys` names the files)."""
CLIENT_KEYS_DIR = f"{KEYS_ROOT}/client-keys"
"""A client's keys (a Secret, read-only): the job's CA certificate and the clients' private keys."""
KEYS_VOLUME = "keys"
"""The pods' volume of the job's keys (spec.security.enabled): at TLS_DIR in the server pod,
CLIENT_KEYS_DIR in the client pods."""
FINAL_VOLUME = "final"
"""The server pod's volume of the job's final status (FINAL_STATUS_DIR)."""
POD_VOLUMES = {**POD_FOLDERS, FINAL_VOLUME: FINAL_STATUS_DIR, KEYS_VOLUME: KEYS_ROOT}
"""Every volume of the operator's in the pods, by name, and where it is mounted (the keys volume:
under KEYS_ROOT): the names and paths a user's own volumes (spec.server.volumes,
spec.clients.volumes) cannot take, so a pod template can neither replace nor shadow the job's keys."""


@dataclass(frozen=True)
class OutputFolder:
    """The server's output folder (ENV_OUTPUT_DIR; `kubeflower run --output`) and what goes in it.

    The one description of what a job leaves behind: whoever writes or reads a result asks here.
    It outlives the run and is read by whoever reads the job's results, so keys, tokens and other
    secrets never go in it (they belong in their own volume, mounted where they are needed).
    """

    root: Path

    @property
    def metrics(self) -> Path:
        """The final status document (`kubeflower.core.server_status`), every round: the server entry point."""
        return self.root / "metrics.json"

    @property
    def final_model(self) -> Path:
        """The built-in app's final model, a torch state_dict: its ServerApp."""
        return self.root / "final_model.pt"

    @property
    def plot(self) -> Path:
        """Loss and accuracy per round, as a picture: `kubeflower run`."""
        return self.root / "metrics.png"

    @property
    def logs(self) -> Path:
        """One log file per process (`server.log`, `client-N.log`): `kubeflower run` (pods log to stdout)."""
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        """One checkpoint per round (`round-000003.pt`, the last few kept), to resume from: the built-in ServerApp."""
        return self.root / "checkpoints"

    @property
    def server_log(self) -> Path:
        """The server's log (its own lines and the SuperLink's): the server entry point."""
        return self.logs / "server.log"

    @property
    def job_uid(self) -> Path:
        """The UID of the job this folder's run belongs to: `kubeflower run` writes a fresh one, and
        `--resume` reads it back (a cluster job's UID is its metadata.uid)."""
        return self.root / "job-uid"

    @property
    def app(self) -> Path:
        """A user's Flower App's working directory (ENV_WORK_DIR): what it saves under a relative
        path lands here, beside the results, never over them (`metrics.json` is written after the run)."""
        return self.root / "app"

    def results(self) -> tuple[Path, ...]:
        """What a finished run leaves, as opposed to the logs and the working folders."""
        return (self.metrics, self.final_model, self.plot)


# Run-config keys the server entry point reads too (`kubeflower.core.runconfig` writes them).
RUN_CONFIG_ROUNDS = "num-server-rounds"
"""The number of rounds (`spec.rounds`), for every app: Flower's app templates read this key."""
RUN_CONFIG_MIN_CLIENTS = "min-available-clients"
"""The built-in app's minimum of connected clients before a round starts."""

# Variables read by both entry points.
ENV_JOB_NAME = "KUBEFLOWER_JOB_NAME"
ENV_DATA_DIR = "KUBEFLOWER_DATA_DIR"
ENV_CACHE_DIR = "KUBEFLOWER_CACHE_DIR"
"""A writable folder for prepared data sets, used when the data folder cannot be written."""

ENV_ROUNDS_KEY = "KUBEFLOWER_ROUNDS_KEY"
"""The run-config key that holds the number of rounds (a user's app's spec.app.roundsKey); unset:
RUN_CONFIG_ROUNDS. The number itself has one channel, the run config."""
ENV_WORK_DIR = "KUBEFLOWER_WORK_DIR"
"""The working directory of the Flower App's processes (both entry points change into it, and
their ServerApp and ClientApp processes inherit it): `OutputFolder.app`, writable where the root
file system is read-only."""

# Server entry point.
ENV_RUN_CONFIG = "KUBEFLOWER_RUN_CONFIG"
"""JSON object: the Flower run config submitted with the run (see `kubeflower.core.runconfig`)."""
ENV_APP_PATH = "KUBEFLOWER_APP_PATH"
"""Directory of the user's Flower App in the image; unset for the built-in app. The clients read
what their fork server pre-imports from its pyproject.toml (warm ClientApps)."""
ENV_MIN_CLIENTS = "KUBEFLOWER_MIN_CLIENTS"
"""Your own app only: the clients a round waits for (spec.strategy.minAvailableClients), for the
server's waiting message. The built-in app has it in its run config, its one channel, as it has the
number of rounds for every app (`kubeflower.core.runconfig`)."""
ENV_STOP_TOKEN = "KUBEFLOWER_STOP_TOKEN"
"""The job's UID: a `POST /stop` on the status port carrying it (header STOP_TOKEN_HEADER) ends
the run as Failed and stops the SuperLink (the operator's verdict: deadline, backoffLimit); unset
(`kubeflower run`): no stop endpoint."""
STOP_TOKEN_HEADER = "X-Kubeflower-Stop-Token"
ENV_SUPERLINK_PORT = "KUBEFLOWER_SUPERLINK_PORT"
ENV_BIND_HOST = "KUBEFLOWER_BIND_HOST"
"""Interface the SuperLink and the status endpoint listen on; unset means all (a pod). `kubeflower
run` sets 127.0.0.1: Flower's Control API shares the SuperLink port and has no authentication."""
ENV_STATUS_PORT = "KUBEFLOWER_STATUS_PORT"
ENV_SUPERLINK_LOOPBACK_PORT = "KUBEFLOWER_SUPERLINK_LOOPBACK_PORT"
ENV_TLS_DIR = "KUBEFLOWER_TLS_DIR"
ENV_OUTPUT_DIR = "KUBEFLOWER_OUTPUT_DIR"
"""The server's output folder (`OutputFolder`): a ServerApp, the built-in one or yours, finds it here."""
ENV_FINAL_STATUS = "KUBEFLOWER_FINAL_STATUS"
"""A file that exists once the job has finished, holding its final status document (the operator's
ConfigMap, FINAL_STATUS_DIR/FINAL_STATUS_KEY); unset in `kubeflower run`, whose output folder says it."""
ENV_JOB_UID = "KUBEFLOWER_JOB_UID"
"""The job's metadata.uid (a fresh one per `kubeflower run` without --resume): checkpoints carry it,
so a new job on a reused output volume never resumes another job's model."""

ENV_SECURITY = "KUBEFLOWER_SECURITY"
"""`enabled` (spec.security.enabled, the default): TLS on every Flower connection and SuperNode
authentication, keys in ENV_TLS_DIR (server) and ENV_CLIENT_KEYS_DIR (clients); `disabled`: plain
HTTP (ClusterIP jobs only). Read by both entry points; anything else is an error."""
SECURITY_ENABLED = "enabled"
SECURITY_DISABLED = "disabled"

# Client entry point.
ENV_CLIENT_KEYS_DIR = "KUBEFLOWER_CLIENT_KEYS_DIR"
ENV_SUPERLINK = "KUBEFLOWER_SUPERLINK"
"""host:port of the SuperLink (the server Service's DNS name in a cluster)."""
ENV_POD_NAME = "KUBEFLOWER_POD_NAME"
"""The pod's name (downward API); a StatefulSet pod's ordinal is its partition id."""
ENV_PARTITION_ID = "KUBEFLOWER_PARTITION_ID"
"""Explicit partition id; wins over the ordinal in ENV_POD_NAME."""
ENV_NUM_PARTITIONS = "KUBEFLOWER_NUM_PARTITIONS"
ENV_SUPERNODE_PORT = "KUBEFLOWER_SUPERNODE_PORT"
ENV_HEALTH_ADDRESS = "KUBEFLOWER_HEALTH_ADDRESS"
"""host:port of the SuperNode's gRPC health server; unset: none (`kubeflower run` needs no probes)."""
ENV_WARM_CLIENTAPPS = "KUBEFLOWER_WARM_CLIENTAPPS"
"""`true` or `false` (spec.clients.warmClientApps): ClientApp processes forked from a fork server
that has already imported torch and Flower, or started fresh by Flower. Unset means `true`."""
ENV_WARM_SUPEREXEC = "KUBEFLOWER_WARM_SUPEREXEC"
"""`true` or `false`, with warm ClientApps: the fork server takes Flower's SuperExec's role (the
SuperNode runs with `--isolation process`), or Flower's SuperExec starts each message through the
`flwr-clientapp` shim. Unset means `true`. Not a job field: the client entry point's environment
(`kubeflower run` passes its own on), for comparing the two (`bench.client_cost`)."""
ENV_THREADS = "OMP_NUM_THREADS"
"""torch's intra-op threads in a client's ClientApp processes: the container's CPU limit or request
(downward API), not the node's core count. With more threads than CPUs every small op of a small model waits
at a barrier for a descheduled thread: digits trained 5 to 40 times slower that way here."""

# Flower's own settings, the same in every pod.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_HOME": FLWR_HOME,
}


def ordinal_from_pod_name(pod_name: str) -> int:
    """A StatefulSet pod is named `<statefulset>-<ordinal>`."""
    suffix = pod_name.rsplit("-", 1)[-1]
    if not suffix.isdigit():
        raise ValueError(f"pod name {pod_name!r} does not end in a StatefulSet ordinal; set {ENV_PARTITION_ID}")
    return int(suffix)
