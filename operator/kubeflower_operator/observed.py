"""What the operator sees of a job's world, reduced to the facts a reconcile decides on.

The kopf indexes keep these summaries in memory from the watch streams, so a reconcile costs no
API request to learn the state of a job's children.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeflower.core import contract
from kubeflower.core.environment import CLIENTS
from kubeflower.core.server_status import ServerStatus

CONFIG_HASH = "kubeflower.io/config-hash"
"""Annotation on each child: the hash of the manifest it was built from, to detect spec drift."""


@dataclass(frozen=True)
class Child:
    """One child object (Deployment, StatefulSet, Service, NetworkPolicy, ConfigMap) as observed."""

    kind: str
    name: str
    replicas: int = 0
    ready_replicas: int = 0
    config_hash: str | None = None
    deleting: bool = False
    resource_version: str | None = None
    """What a replace must carry: it fails (409) if the object changed since it was observed."""
    partitions: int | None = None
    """The clients' KUBEFLOWER_NUM_PARTITIONS (a StatefulSet's): the split a scale must keep."""
    component: str = ""

    @property
    def key(self) -> str:
        """How a reconcile names it (`child_key`)."""
        return child_key(self.kind, self.component)


CLIENTS_POLICY = "NetworkPolicy/clients"


def child_key(kind: str, component: str) -> str:
    """A child's name in a reconcile: its kind, one child per kind, but for the two NetworkPolicies
    (the server's is `NetworkPolicy`, the clients' `CLIENTS_POLICY`)."""
    return CLIENTS_POLICY if kind == "NetworkPolicy" and component == CLIENTS else kind


def manifest_key(manifest: Any) -> str:
    return child_key(manifest["kind"], manifest["metadata"].get("labels", {}).get(contract.COMPONENT_LABEL, ""))


def summarize(body: Any) -> Child:
    """The facts of one child object that a reconcile uses (kept in the operator's indexes)."""
    meta = body.get("metadata", {})
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return Child(
        kind=body.get("kind", ""),
        name=meta.get("name", ""),
        replicas=int(spec.get("replicas", 0) or 0),
        ready_replicas=int(status.get("readyReplicas", 0) or 0),
        config_hash=(meta.get("annotations") or {}).get(CONFIG_HASH),
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=meta.get("resourceVersion"),
        partitions=_partitions(spec),
        component=(meta.get("labels") or {}).get(contract.COMPONENT_LABEL, ""),
    )


def _partitions(spec: Any) -> int | None:
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers[:1]:
        for var in container.get("env") or []:
            if var.get("name") == contract.ENV_NUM_PARTITIONS and str(var.get("value", "")).isdigit():
                return int(var["value"])
    return None


def restart_count(pod: Any) -> int:
    """Container restarts of one pod, from its status."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0) or 0) for s in statuses)


@dataclass(frozen=True)
class ServerPod:
    """One server pod: which one (its UID), when it was made, how often its containers restarted."""

    uid: str
    created: str
    restarts: int


def server_pod(pod: Any) -> ServerPod:
    meta = pod.get("metadata", {})
    return ServerPod(meta.get("uid", ""), meta.get("creationTimestamp") or "", restart_count(pod))


@dataclass(frozen=True)
class Poll:
    """The latest read of the server's status document."""

    document: ServerStatus | None = None
    error: str | None = None
    failing_since: float | None = None
    """Monotonic-free wall time (epoch seconds) of the first failure in the current run of failures."""
    invalid: bool = False
    """The server answered, with something that is not a status document."""


CERTIFICATE_MESSAGE_MAX = 300
"""A cert-manager condition's message in the job's status: bounded (it quotes an issuer's errors)."""


@dataclass(frozen=True)
class CertificateState:
    """The job's cert-manager Certificate (`spec.security.issuerRef`), as read before its server exists."""

    ready: bool
    message: str
    """Its Ready condition's message, printable and bounded."""

    @classmethod
    def of(cls, certificate: dict[str, Any]) -> CertificateState:
        conditions = (certificate.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if ready is None:
            return cls(ready=False, message="not issued yet")
        said = "".join(ch if ch.isprintable() else " " for ch in str(ready.get("message") or ""))
        return cls(ready=ready.get("status") == "True", message=said[:CERTIFICATE_MESSAGE_MAX])


@dataclass(frozen=True)
class Observed:
    children: dict[str, Child] = field(default_factory=dict)
    """By `child_key`: Deployment, Service, NetworkPolicy, CLIENTS_POLICY, StatefulSet, ConfigMap (the
    final status)."""
    server_pods: tuple[ServerPod, ...] = ()
    poll: Poll = field(default_factory=Poll)
    data_claim_modes: tuple[str, ...] | None = None
    """The access modes of the job's data claim (spec.data.claimName), read before the clients are
    created; None when not read (no claim, the clients exist, or the claim does not exist yet)."""
    certificate: CertificateState | None = None
    """The job's cert-manager Certificate, read while the server does not exist yet; None when not
    read (no `spec.security.issuerRef`, or the server exists)."""
