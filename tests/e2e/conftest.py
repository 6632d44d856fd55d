"""The e2e fixture: a one-node "cluster" -- the API test server, the pod runner, the CRD and the
operator installed from deploy/ -- fresh for each test, and torn down after it, also on failure.

The operator runs as the pod of its own Deployment, rendered from `deploy/` by `kubectl kustomize`
with a test overlay (`operator_overlay`): it logs in with a kubeconfig from a ConfigMap (the test
server has no service accounts), and reconciles every second. RBAC objects are left out: the test
server does not serve them (nor check any permission).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for
from tests.kubeserver import KubeServer
from tests.podrunner import Network, PodRunner, missing_requirements

REPO = Path(__file__).resolve().parents[2]
FTJ = ("kubeflower.io/v1alpha1", "federatedtrainingjobs")
JOB_LABEL = "kubeflower.io/job-name"
OPERATOR_NAMESPACE = "kubeflower-system"
OPERATOR = "kubeflower-operator"
RECONCILE_INTERVAL = "1"
CHILD_KINDS = (
    ("Deployment", "apps/v1", "deployments"),
    ("ReplicaSet", "apps/v1", "replicasets"),
    ("StatefulSet", "apps/v1", "statefulsets"),
    ("Pod", "v1", "pods"),
    ("Service", "v1", "services"),
    ("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies"),
)


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
    container.setdefault("env", []).extend([
        {"name": "KUBECONFIG", "value": "/etc/kubeflower/kubeconfig"},
        {"name": "KUBEFLOWER_RECONCILE_INTERVAL", "value": RECONCILE_INTERVAL},
    ])
    container.setdefault("volumeMounts", []).append({"name": "kubeconfig", "mountPath": "/etc/kubeflower", "readOnly": True})
    pod.setdefault("volumes", []).append({"name": "kubeconfig", "configMap": {"name": config_map["metadata"]["name"]}})
    return [kept[0], config_map, *kept[1:]]


class Cluster:
    """The test's view: kubectl, the job's status and children, its pods' processes."""

    def __init__(self, kube: KubeServer, runner: PodRunner, tmp: Path, namespace: str = "e2e") -> None:
        self.kube, self.runner, self.tmp, self.ns = kube, runner, tmp, namespace

    # Setting up.

    def install(self) -> None:
        self.kube.kubectl("apply", "-f", str(REPO / "crds"), "--validate=false")
        rendered = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=True).stdout
        documents = operator_overlay(list(yaml.safe_load_all(rendered)), Path(self.kube.kubeconfig).read_text())
        self.apply_documents("operator", documents, namespace=None)
        self.apply_documents("namespace", [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}], namespace=None)
        self.wait_operator_started()

    def apply_documents(self, name: str, documents: list[dict[str, Any]], namespace: str | None = "") -> str:
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

    def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str = "") -> dict[str, Any]:
        try:
            return wait_for(lambda: (s := self.status(name)) and check(s) and s, timeout, f"{what or 'status'} of {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its status: {self.status(name)}") from None

    def children(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """The job's objects by kind (pods and replica sets carry the job's labels too)."""
        return {kind: self.kube.list(gv, plural, self.ns, label_selector=f"{JOB_LABEL}={name}") for kind, gv, plural in CHILD_KINDS}

    def names(self, name: str) -> dict[str, list[str]]:
        return {kind: sorted(o["metadata"]["name"] for o in objs) for kind, objs in self.children(name).items()}

    def pods(self, name: str, component: str) -> list[dict[str, Any]]:
        return [p for p in self.children(name)["Pod"] if p["metadata"]["labels"].get("app.kubernetes.io/component") == component]

    def processes(self, name: str, component: str | None = None) -> dict[int, str]:
        selector = {JOB_LABEL: name, **({"app.kubernetes.io/component": component} if component else {})}
        return self.runner.processes(self.ns, selector)

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.kube.list("v1", "events", self.ns)
                if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason]

    def server_document(self, name: str) -> dict[str, Any] | None:
        """The server's GET /status, read from the node as `kubectl port-forward` would."""
        for pod in self.pods(name, "server"):
            address = (pod.get("status") or {}).get("podIP")
            if address and not pod["metadata"].get("deletionTimestamp"):
                try:
                    with urllib.request.urlopen(f"http://{address}:8080/status", timeout=2) as response:  # noqa: S310
                        return json.loads(response.read())
                except OSError:
                    return None
        return None

    def restarts(self, pod: dict[str, Any]) -> int:
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[KubeServer, PodRunner]]:
    """The API test server and a pod runner for it, nothing installed; torn down after the test,
    which fails if the runner reported an error or left anything behind."""
    missing = missing_requirements()
    if missing:
        pytest.skip(f"pods cannot run as local processes here: {missing}")
    started = time.monotonic()
    with Network() as network, KubeServer(host=network.gateway) as kube:
        with PodRunner(kube, network, log_dir=tmp_path / "logs", backoff=getattr(request, "param", 10.0)) as runner:
            try:
                yield kube, runner
            finally:
                if request.node.stash.get(_FAILED, True):
                    print(f"=== the pods' logs ({tmp_path / 'logs'}) ===\n{runner.log_tails()}")
                    listing = kube.kubectl("get", "all,netpol,ftj", "-A", check=False)
                    print(f"=== kubectl get all ===\n{listing.stdout}{listing.stderr}")
                    jobs = kube.kubectl("get", "ftj", "-A", "-o", "yaml", check=False)
                    print(f"=== kubectl get ftj -A -o yaml ===\n{jobs.stdout}{jobs.stderr}")
                    writes = [f"{r.method} {r.path}" for r in kube.requests if r.method not in ("GET",)]
                    print("=== the API writes ===\n" + "\n".join(writes[-60:]))
        leftovers = runner.leftovers()
    print(f"node up and torn down around the test in {time.monotonic() - started:.0f}s")
    assert runner.errors == [], runner.errors
    assert leftovers == [], f"left behind: {leftovers}"


@pytest.fixture
def cluster(node: tuple[KubeServer, PodRunner], tmp_path: Path) -> Cluster:
    """The node with the CRD and the operator (from deploy/) installed, and a namespace `e2e`."""
    kube, runner = node
    cluster = Cluster(kube, runner, tmp_path)
    cluster.install()
    return cluster
