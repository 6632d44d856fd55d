"""The operator's configuration: one object, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version

WORKLOAD_IMAGE = f"ghcr.io/kubeflower/workload:{version('kubeflower')}"
"""The workload image `make images` builds, named with the registry it is published to and the
project's version (pyproject.toml), so that a cluster never resolves it against Docker Hub."""


def _env(name: str, default: str) -> str:
    return os.environ.get(f"KUBEFLOWER_{name}", default)


def _flag(name: str, default: bool) -> bool:
    value = _env(name, str(default).lower()).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"KUBEFLOWER_{name} must be true or false, not {value!r}")
    return value == "true"


@dataclass(frozen=True)
class Settings:
    image: str = WORKLOAD_IMAGE
    """Workload image for jobs that do not set spec.image."""
    image_pull_policy: str = "IfNotPresent"
    reconcile_interval: float = 5.0
    """Seconds between level-triggered reconciles of a job (the timer), each one reading the
    running server's status document. Read once, when the handlers module is imported."""
    poll_timeout: float = 3.0
    poll_failure_tolerance: float = 120.0
    """Seconds of failed status reads tolerated before a running job is marked Failed."""
    status_url: str = "http://{name}-server.{namespace}.svc:{port}/status"
    """Where the operator reads a job's status document; placeholders: name, namespace, port."""
    run_as_user: int = 10001
    """Non-root UID of the workload's pods (the workload image's user)."""
    metrics_port: int = 9090
    """Port of the operator's own Prometheus metrics (`/metrics`, see `metrics`)."""
    leader_election: bool = False
    """Work only while holding the Lease `kubeflower-operator` (see `leadership`); deploy/ turns it on."""
    lease_namespace: str = ""
    """Namespace of that Lease; empty: the pod's own namespace."""
    namespace: str = "kubeflower-system"
    """The operator's own namespace (deploy/ sets it from the downward API): the jobs' NetworkPolicies
    let it, and only it (with the user's monitoring namespaces), read their servers' status port."""

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            image=_env("IMAGE", d.image),
            image_pull_policy=_env("IMAGE_PULL_POLICY", d.image_pull_policy),
            reconcile_interval=float(_env("RECONCILE_INTERVAL", str(d.reconcile_interval))),
            poll_timeout=float(_env("POLL_TIMEOUT", str(d.poll_timeout))),
            poll_failure_tolerance=float(_env("POLL_FAILURE_TOLERANCE", str(d.poll_failure_tolerance))),
            status_url=_env("STATUS_URL", d.status_url),
            run_as_user=int(_env("RUN_AS_USER", str(d.run_as_user))),
            metrics_port=int(_env("METRICS_PORT", str(d.metrics_port))),
            leader_election=_flag("LEADER_ELECTION", d.leader_election),
            lease_namespace=_env("LEASE_NAMESPACE", d.lease_namespace),
            namespace=_env("NAMESPACE", d.namespace),
        )
