"""What the server and each client get from their job, as pure functions: the contract's values.

`kubeflower.core.contract` names the variables; this module says what they hold for a job. The
operator's builders turn these into container env entries, adding only what the kubelet knows
(a client pod's name and CPUs, through the downward API); `kubeflower run` sets them for local
processes directly, with its own ports and folders in place of the pod's.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubeflower.core import contract
from kubeflower.core.api import FederatedTrainingJob, PodSettings
from kubeflower.core.runconfig import run_config

SERVER = "server"
CLIENTS = "clients"
"""The two components of a job: their children's name suffixes and `COMPONENT_LABEL` values."""


WORK_DIR = str(contract.OutputFolder(Path(contract.OUTPUT_DIR)).app)
"""The app's working directory in both pods: the output folder's place for it (a client pod's output
folder is its own)."""


def server_name(job_name: str) -> str:
    return f"{job_name}-{SERVER}"


def clients_name(job_name: str) -> str:
    return f"{job_name}-{CLIENTS}"


def superlink_address(job: FederatedTrainingJob) -> str:
    """The server Service's DNS name and Flower port, as clients in the cluster reach it."""
    return f"{server_name(job.metadata.name)}.{job.metadata.namespace or 'default'}.svc:{contract.SUPERLINK_PORT}"


def server_names(job: FederatedTrainingJob) -> list[str]:
    """The names the server certificate covers (beside loopback): every form of the Service's DNS
    name a client may dial, and the user's own (`spec.security.serverNames`)."""
    service, namespace = server_name(job.metadata.name), job.metadata.namespace or "default"
    names = [
        f"{service}.{namespace}.svc",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    return names + list(job.spec.security.server_names or [])


def _security(job: FederatedTrainingJob, keys_var: str, keys_dir: str) -> dict[str, str]:
    if not job.spec.security.enabled:
        return {contract.ENV_SECURITY: contract.SECURITY_DISABLED}
    return {contract.ENV_SECURITY: contract.SECURITY_ENABLED, keys_var: keys_dir}


def server_environment(job: FederatedTrainingJob) -> dict[str, str]:
    """The server entry point's environment (before the user's `spec.server.env`)."""
    spec = job.spec
    env = {
        contract.ENV_JOB_NAME: job.metadata.name,
        contract.ENV_RUN_CONFIG: json.dumps(run_config(spec), sort_keys=True),
        contract.ENV_SUPERLINK_PORT: str(contract.SUPERLINK_PORT),
        contract.ENV_SUPERLINK_LOOPBACK_PORT: str(contract.SUPERLINK_LOOPBACK_PORT),
        contract.ENV_STATUS_PORT: str(contract.STATUS_PORT),
        contract.ENV_OUTPUT_DIR: contract.OUTPUT_DIR,
        contract.ENV_DATA_DIR: contract.DATA_DIR,
        **_security(job, contract.ENV_TLS_DIR, contract.TLS_DIR),
        contract.ENV_FINAL_STATUS: f"{contract.FINAL_STATUS_DIR}/{contract.FINAL_STATUS_KEY}",
        contract.ENV_WORK_DIR: WORK_DIR,
        **contract.FLOWER_ENV,
    }
    if spec.app is not None:
        env[contract.ENV_APP_PATH] = spec.app.path
        env[contract.ENV_MIN_CLIENTS] = str(spec.min_available_clients)
        env[contract.ENV_ROUNDS_KEY] = spec.app.rounds_key
    if job.metadata.uid:  # a job in a cluster: checkpoints carry its UID; the operator may stop its run
        env[contract.ENV_JOB_UID] = job.metadata.uid
        env[contract.ENV_STOP_TOKEN] = job.metadata.uid
    return env


def user_values(settings: PodSettings) -> dict[str, str]:
    """The user's own variables (`spec.server.env`, `spec.clients.env`) that carry a plain value.

    Those read `valueFrom` a Secret, a ConfigMap or the downward API need a cluster; `kubeflower
    run` leaves them out (the processes inherit the caller's shell instead).
    """
    wired = [var.wire() for var in settings.env or []]
    return {var["name"]: var["value"] for var in wired if "value" in var}


def client_environment(job: FederatedTrainingJob, partitions: int | None = None) -> dict[str, str]:
    """A client entry point's environment, the same for every client (before the user's
    `spec.clients.env`); its partition comes from its pod's name (ENV_POD_NAME), its torch threads
    from its CPUs (ENV_THREADS), which only the pod knows. `partitions`: how many shards the data
    is split into, fixed when the clients were first made (a scale must not change it: that would
    restart every client and re-split the data mid-run); by default the replica count."""
    values = {
        contract.ENV_JOB_NAME: job.metadata.name,
        contract.ENV_SUPERLINK: superlink_address(job),
        contract.ENV_NUM_PARTITIONS: str(partitions or job.spec.clients.replicas),
        contract.ENV_SUPERNODE_PORT: str(contract.SUPERNODE_PORT),
        contract.ENV_HEALTH_ADDRESS: f"0.0.0.0:{contract.SUPERNODE_HEALTH_PORT}",
        contract.ENV_DATA_DIR: contract.DATA_DIR,
        contract.ENV_CACHE_DIR: contract.CACHE_DIR,
        contract.ENV_WARM_CLIENTAPPS: str(job.spec.clients.warm_client_apps).lower(),
        **_security(job, contract.ENV_CLIENT_KEYS_DIR, contract.CLIENT_KEYS_DIR),
        contract.ENV_WORK_DIR: WORK_DIR,
        **contract.FLOWER_ENV,
    }
    if job.spec.app is not None:  # the clients read what their fork server pre-imports from it
        values[contract.ENV_APP_PATH] = job.spec.app.path
    return values
