"""The e2e fixture: a one-node "cluster" -- the API test server, the pod runner, the CRD and the
operator installed from deploy/ -- fresh for each test, and torn down after it, also on failure.

The operator runs as the pod of its own Deployment, rendered from `deploy/` by `kubectl kustomize`
with a test overlay (`testbed.cluster.operator_overlay`): it logs in with a kubeconfig from a ConfigMap (the test
server has no service accounts), and reconciles every second. RBAC objects are left out: the test
server does not serve them (nor check any permission).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import Cluster
from testbed.kubeserver import KubeServer
from testbed.podrunner import Network, PodRunner, missing_requirements


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
    cluster = Cluster(kube, "e2e", tmp_path, runner)
    cluster.install()
    return cluster
