"""The operator image: non-root, none of the workload's packages, and, run as a container against
the Kubernetes API test server, it reconciles an example job into exactly what `kubeflower render`
gives, then follows the job's status document to Succeeded."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus
from testbed.cluster import wait_for
from testbed.containers.engine import REPO, Docker
from testbed.containers.federation import render
from testbed.containers.pods import LABEL
from testbed.kubeserver import KubeServer
from testbed.statusboard import StatusBoard
from tests.conftest import free_port

pytestmark = pytest.mark.images
DIGITS = REPO / "examples" / "digits-fedavg.yaml"
NAMESPACE = "jobs"
JOB = "digits-fedavg"
KINDS = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "FederatedTrainingJob": ("kubeflower.io/v1alpha1", "federatedtrainingjobs"),
}


def python_in(docker: Docker, image: str, code: str) -> str:
    return docker("run", "--rm", "--entrypoint", "python3", image, "-c", code).strip()


def test_the_operator_image_runs_as_non_root_without_the_workloads_packages(
    docker: Docker, operator_image: str
) -> None:
    assert docker.inspect("image", operator_image)["Config"]["User"] == "10001:10001"
    assert docker("run", "--rm", "--entrypoint", "id", operator_image, "-u").strip() == "10001"
    found = python_in(
        docker,
        operator_image,
        "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'flwr', 'numpy', 'pip')"
        " if u.find_spec(m)])",
    )
    assert found == "[]"
    # The standard library's operator module, whatever the working directory.
    assert python_in(docker, operator_image, "import operator; print(operator.eq(1, 1))") == "True"


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """What the operator decides about a child: its identity, labels, annotations and spec."""
    meta = obj["metadata"]
    return {
        "kind": obj["kind"],
        "apiVersion": obj["apiVersion"],
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "labels", "annotations")},
        "spec": obj["spec"],
    }


@pytest.fixture
def operator_container(docker: Docker, operator_image: str, tmp_path: Path) -> Iterator[tuple[KubeServer, StatusBoard]]:
    """The image's own entry point, logged in with a kubeconfig for the API test server, locked
    down as deploy/ runs it (non-root, read-only root with /tmp as tmpfs, no capabilities)."""
    with KubeServer() as kube, StatusBoard() as board:
        kube.kubectl("apply", "-f", str(REPO / "crds"), "--validate=false")
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        name = f"kfimg-operator-{secrets.token_hex(3)}"
        docker(
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            LABEL,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            f"{kube.kubeconfig}:/etc/kubeflower/kubeconfig:ro",
            "--env",
            "KUBECONFIG=/etc/kubeflower/kubeconfig",
            "--env",
            "KUBEFLOWER_RECONCILE_INTERVAL=1",
            "--env",
            f"KUBEFLOWER_STATUS_URL={board.url_template}",
            "--env",
            f"KUBEFLOWER_METRICS_PORT={free_port()}",  # the host's network: a free port
            operator_image,
        )
        try:
            yield kube, board
        except BaseException:
            print(docker.logs(name)[-6000:])
            raise
        finally:
            docker("rm", "--force", name, check=False)


def test_the_operator_image_reconciles_a_job_as_render_says(
    operator_container: tuple[KubeServer, StatusBoard], tmp_path: Path
) -> None:
    kube, board = operator_container
    kube.kubectl("apply", "-n", NAMESPACE, "-f", str(DIGITS), "--validate=false")
    # The server's stop token is the job's UID, which the API server gives it: render that job.
    applied = yaml.safe_load(DIGITS.read_text())
    applied["metadata"]["uid"] = kube.get(*KINDS["FederatedTrainingJob"], NAMESPACE, JOB)["metadata"]["uid"]
    (tmp_path / "applied.yaml").write_text(yaml.safe_dump(applied))
    expected = {(o["kind"], o["metadata"]["name"]): comparable(o) for o in render(tmp_path / "applied.yaml", NAMESPACE)}

    def child(kind: str) -> dict[str, Any] | None:
        name = f"{JOB}-clients" if kind == "StatefulSet" else f"{JOB}-server"
        return kube.get(*KINDS[kind], NAMESPACE, name)

    for kind in ("Deployment", "Service", "NetworkPolicy"):
        made = wait_for(partial(child, kind), 60, f"the operator container to create the {kind}")
        assert comparable(made) == expected[(kind, made["metadata"]["name"])], kind
        assert made["metadata"]["ownerReferences"][0]["name"] == JOB
    assert child("StatefulSet") is None, "clients before the server is ready"

    # Play the Deployment controller and the job's server: ready, then a run that finishes.
    kube.patch_status("apps/v1", "deployments", NAMESPACE, f"{JOB}-server", {"replicas": 1, "readyReplicas": 1})
    board.post(
        NAMESPACE, JOB, ServerStatus(phase=Phase.RUNNING, total_rounds=3, clients={"connected": 2, "expected": 2})
    )
    clients = wait_for(lambda: child("StatefulSet"), 60, "the client StatefulSet")
    assert comparable(clients) == expected[("StatefulSet", f"{JOB}-clients")]
    kube.patch_status("apps/v1", "statefulsets", NAMESPACE, f"{JOB}-clients", {"replicas": 2, "readyReplicas": 2})
    done = ServerStatus(phase=Phase.SUCCEEDED, total_rounds=3, clients={"connected": 2, "expected": 2})
    for r in (1, 2, 3):
        done = done.with_round(RoundRecord(round=r, metrics={"accuracy": 0.9, "loss": 0.3}, replies=2))
    board.post(NAMESPACE, JOB, done)
    job = wait_for(
        lambda: (
            (j := kube.get("kubeflower.io/v1alpha1", "federatedtrainingjobs", NAMESPACE, JOB))
            and (j.get("status") or {}).get("phase") == "Succeeded"
            and j
        ),
        60,
        "the job to succeed",
    )
    assert job["status"]["round"] == "3/3", json.dumps(job["status"])
