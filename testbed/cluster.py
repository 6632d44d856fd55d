"""The one view a test has of its cluster: kubectl, a job's status, children, events and pods.

Used by the operator tests (the API test server alone: what a controller would do, the test does
through `server_ready`/`clients_ready`) and by the end-to-end tests (with a pod runner: pods,
their processes, the server's status document read from the node).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubeflower.core.contract import COMPONENT_LABEL, JOB_LABEL, STATUS_PORT
from kubeflower.core.server_status import fetch
from testbed.kubeserver import KubeServer
from testbed.podrunner import PodRunner

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "kubeflower-system"
OPERATOR = "kubeflower-operator"
RECONCILE_INTERVAL = "1"
"""The operator pod's reconcile interval in seconds (deployed: 5)."""

FTJ = ("kubeflower.io/v1alpha1", "federatedtrainingjobs")
CHILD_KINDS = (
    ("Deployment", "apps/v1", "deployments"),
    ("ReplicaSet", "apps/v1", "replicasets"),
    ("StatefulSet", "apps/v1", "statefulsets"),
    ("Pod", "v1", "pods"),
    ("Service", "v1", "services"),
    ("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies"),
    ("ConfigMap", "v1", "configmaps"),
)
"""What carries a job's label: its children, and the replica sets and pods they make."""


def wait_for(probe: Callable[[], T], timeout: float, what: str) -> T:
    """The first truthy value of probe(), or a failure naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def operator_overlay(documents: list[dict[str, Any]], kubeconfig: str) -> list[dict[str, Any]]:
    """deploy/ as rendered, for this test server: no RBAC kinds, a kubeconfig, a brisk reconcile."""
    kept = [d for d in documents if d["kind"] in ("Namespace", "ServiceAccount", "Deployment")]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kubeflower-operator-kubeconfig", "namespace": OPERATOR_NAMESPACE},
        "data": {"kubeconfig": kubeconfig},
    }
    deployment = next(d for d in kept if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container.setdefault("env", []).extend(
        [
            {"name": "KUBECONFIG", "value": "/etc/kubeflower/kubeconfig"},
            {"name": "KUBEFLOWER_RECONCILE_INTERVAL", "value": RECONCILE_INTERVAL},
        ]
    )
    container.setdefault("volumeMounts", []).append(
        {"name": "kubeconfig", "mountPath": "/etc/kubeflower", "readOnly": True}
    )
    pod.setdefault("volumes", []).append({"name": "kubeconfig", "configMap": {"name": config_map["metadata"]["name"]}})
    return [kept[0], config_map, *kept[1:]]


class Cluster:
    """One namespace of the API test server, with the moves a test makes (and its pods, given a runner)."""

    def __init__(self, kube: KubeServer, namespace: str, tmp: Path, runner: PodRunner | None = None) -> None:
        self.kube, self.ns, self.tmp, self._runner = kube, namespace, tmp, runner

    @classmethod
    def new_namespace(cls, kube: KubeServer, namespace: str, tmp: Path) -> Cluster:
        """A view of a namespace created now."""
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        return cls(kube, namespace, tmp)

    @property
    def runner(self) -> PodRunner:
        if self._runner is None:
            raise AssertionError("this cluster runs no pods (no pod runner)")
        return self._runner

    def install(self) -> None:
        """The CRD, the operator as deploy/ installs it (with `operator_overlay`), this namespace."""
        self.kube.kubectl("apply", "-f", str(REPO / "crds"), "--validate=false")
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=True
        ).stdout
        documents = operator_overlay(list(yaml.safe_load_all(rendered)), Path(self.kube.kubeconfig).read_text())
        self.apply_documents("operator", documents, namespace=None)
        self.apply_documents(
            "namespace", [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}], namespace=None
        )
        self.wait_operator_started()

    # Applying.

    def apply(self, document: dict[str, Any]) -> None:
        self.apply_documents(document["metadata"]["name"], [document])

    def apply_documents(self, name: str, documents: list[dict[str, Any]], namespace: str | None = "") -> str:
        """`kubectl apply` of the documents in this namespace (or `namespace`; None: as they say)."""
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(documents))
        args = ["-n", namespace or self.ns] if namespace is not None else []
        return self.kube.kubectl("apply", *args, "-f", str(path), "--validate=false").stdout

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        return self.kube.kubectl("-n", self.ns, *args, timeout=timeout).stdout

    # The operator.

    def operator_pods(self) -> list[dict[str, Any]]:
        return self.kube.list("v1", "pods", OPERATOR_NAMESPACE, label_selector=f"app.kubernetes.io/name={OPERATOR}")

    def wait_operator_started(self, timeout: float = 90) -> None:
        """The operator's container runs (its readiness probe comes every 10 s: not waited for;
        jobs applied before kopf watches are found by its first listing)."""
        wait_for(lambda: any(_started(p) for p in self.operator_pods()), timeout, "the operator's container to run")

    def scale_operator(self, replicas: int) -> None:
        self.kube.kubectl("-n", OPERATOR_NAMESPACE, "scale", "deployment", OPERATOR, f"--replicas={replicas}")

    # A job.

    def job(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(*FTJ, self.ns, name)

    def status(self, name: str) -> dict[str, Any]:
        return (self.job(name) or {}).get("status") or {}

    def wait_status(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 20, what: str = ""
    ) -> dict[str, Any]:
        try:
            return wait_for(
                lambda: (s := self.status(name)) and check(s) and s, timeout, f"{what or 'status'} of {name}"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its status: {self.status(name)}") from None

    def children(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """The job's objects by kind (pods and replica sets carry the job's labels too)."""
        return {
            kind: self.kube.list(gv, plural, self.ns, label_selector=f"{JOB_LABEL}={name}")
            for kind, gv, plural in CHILD_KINDS
        }

    def names(self, name: str) -> dict[str, list[str]]:
        return {kind: sorted(o["metadata"]["name"] for o in objs) for kind, objs in self.children(name).items()}

    def wait_children_gone(self, name: str, timeout: float) -> None:
        """Wait until no object carries the job's label; a failure lists those left and who owns them."""
        try:
            wait_for(lambda: not any(self.children(name).values()), timeout, "every object of the job gone")
        except AssertionError as failure:
            left = [
                f"{kind} {meta['name']} (owners {[r.get('name') for r in meta.get('ownerReferences') or []]}"
                f"{', terminating' if meta.get('deletionTimestamp') else ''})"
                for kind, objs in self.children(name).items()
                for meta in (o["metadata"] for o in objs)
            ]
            raise AssertionError(f"{failure}; left: {left}") from None

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.kube.list("v1", "events", self.ns)
            if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason
        ]

    # What controllers would do (the API test server alone runs none).

    def server_ready(self, name: str) -> None:
        self.kube.patch_status("apps/v1", "deployments", self.ns, f"{name}-server", {"replicas": 1, "readyReplicas": 1})

    def clients_ready(self, name: str, ready: int) -> None:
        self.kube.patch_status(
            "apps/v1", "statefulsets", self.ns, f"{name}-clients", {"replicas": ready, "readyReplicas": ready}
        )

    # Pods (with a pod runner).

    def pods(self, name: str, component: str) -> list[dict[str, Any]]:
        return [p for p in self.children(name)["Pod"] if p["metadata"]["labels"].get(COMPONENT_LABEL) == component]

    def processes(self, name: str, component: str | None = None) -> dict[int, str]:
        selector = {JOB_LABEL: name, **({COMPONENT_LABEL: component} if component else {})}
        return self.runner.processes(self.ns, selector)

    def server_document(self, name: str) -> dict[str, Any] | None:
        """The server's GET /status, read from the node as `kubectl port-forward` would."""
        for pod in self.pods(name, "server"):
            address = (pod.get("status") or {}).get("podIP")
            if address and not pod["metadata"].get("deletionTimestamp"):
                try:
                    return fetch(f"http://{address}:{STATUS_PORT}/status", timeout=2).model_dump(
                        mode="json", by_alias=True
                    )
                except (OSError, ValueError):
                    return None
        return None

    @staticmethod
    def restarts(pod: dict[str, Any]) -> int:
        return sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])

    @contextmanager
    def watching(self, *args: str) -> Iterator[list[str]]:
        """`kubectl get ... -w` in the background: the list fills with its output lines as they come."""
        command = ["kubectl", f"--kubeconfig={self.kube.kubeconfig}", "-n", self.ns, "get", *args, "-w"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def read() -> None:
            for line in process.stdout or []:
                lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield lines
        finally:
            process.terminate()
            process.wait(10)
            reader.join(10)


def _started(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return not pod["metadata"].get("deletionTimestamp") and bool(statuses) and all(c.get("started") for c in statuses)
