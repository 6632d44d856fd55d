"""The real operator (kopf.testing.KopfRunner) against the Kubernetes API test server, driven by
the real kubectl. What a controller or kubelet would do (a Deployment becoming ready) the tests do
through the test server; what a job's server reports comes from a StatusBoard.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus
from testbed.cluster import Cluster, wait_for
from testbed.jobs import INVALID, invalid_job, job
from testbed.kubeserver import KubeServer
from testbed.statusboard import StatusBoard
from tests.conftest import running_operator


def document(rounds_done: int, phase: Phase = Phase.RUNNING, total: int = 3, message: str = "") -> ServerStatus:
    doc = ServerStatus(phase=phase, total_rounds=total, message=message, clients={"connected": 2, "expected": 2})
    for r in range(1, rounds_done + 1):
        doc = doc.with_round(
            RoundRecord(round=r, metrics={"loss": 1.0 / r, "accuracy": 0.6 + r / 10}, replies=2, seconds=7.5)
        )
    return doc


CRDS = Path(__file__).resolve().parents[1] / "crds"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(CRDS), "--validate=false")
        yield server


@pytest.fixture
def lone_kube() -> Iterator[KubeServer]:
    """An API test server of the test's own: only the operators the test starts watch it (the
    module's `operator` would go on reconciling through a test's operator restart)."""
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(CRDS), "--validate=false")
        yield server


@pytest.fixture(scope="module")
def board() -> Iterator[StatusBoard]:
    with StatusBoard() as b:
        yield b


@pytest.fixture(scope="module")
def operator(kube: KubeServer, board: StatusBoard) -> Iterator[None]:
    with running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template):
        yield


@pytest.fixture
def cluster(kube: KubeServer, request: pytest.FixtureRequest, tmp_path: Path) -> Cluster:
    return Cluster.new_namespace(kube, request.node.name.replace("_", "-")[:50].strip("-").lower(), tmp_path)


def start_running(cluster: Cluster, board: StatusBoard, name: str, **spec: Any) -> None:
    """Apply a job and play the kubelet until its clients are ready."""
    cluster.apply(job(name, **spec))
    wait_for(lambda: cluster.children(name)["Deployment"], 20, "server Deployment")
    cluster.server_ready(name)
    board.post(cluster.ns, name, document(0))
    wait_for(lambda: cluster.children(name)["StatefulSet"], 20, "client StatefulSet")
    cluster.clients_ready(name, spec.get("clients", {}).get("replicas", 2))


def test_create_builds_owned_children_and_clients_only_after_the_server(
    operator: None, cluster: Cluster, board: StatusBoard
) -> None:
    cluster.apply(job("fl"))
    found = wait_for(
        lambda: (c := cluster.children("fl")) and c["Deployment"] and c["Service"] and c["NetworkPolicy"] and c,
        20,
        "server children",
    )
    uid = cluster.job("fl")["metadata"]["uid"]
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        (child,) = found[kind]
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid, kind
        assert child["metadata"]["ownerReferences"][0]["controller"] is True
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeflower-operator"
    status = cluster.wait_status("fl", lambda s: s.get("phase") == "Pending")
    assert status["reason"] == "WaitingForServer" and status["round"] == "0/3"
    time.sleep(1.5)  # several reconciles: still no clients while the server is not ready
    assert cluster.children("fl")["StatefulSet"] == []

    cluster.server_ready("fl")
    (clients,) = wait_for(lambda: cluster.children("fl")["StatefulSet"], 20, "client StatefulSet")
    assert clients["metadata"]["ownerReferences"][0]["uid"] == uid
    env = {e["name"]: e for e in clients["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEFLOWER_SUPERLINK"]["value"] == f"fl-server.{cluster.ns}.svc:9092"
    assert env["KUBEFLOWER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KUBEFLOWER_NUM_PARTITIONS"]["value"] == "2"
    cluster.clients_ready("fl", 2)
    status = cluster.wait_status("fl", lambda s: s.get("clients") == "2/2" and s.get("phase") == "Running")
    assert status["serverAddress"] == f"fl-server.{cluster.ns}.svc:9092"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"ServerReady": "True", "ClientsReady": "True"}


def test_progress_events_kubectl_then_success_cleanup_and_ttl(
    operator: None, cluster: Cluster, board: StatusBoard
) -> None:
    start_running(cluster, board, "fl", runPolicy={"ttlSecondsAfterFinished": 3})
    watch = subprocess.Popen(
        ["kubectl", f"--kubeconfig={cluster.kube.kubeconfig}", "-n", cluster.ns, "get", "ftj", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        board.post(cluster.ns, "fl", document(1))
        cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
        board.post(cluster.ns, "fl", document(2))
        status = cluster.wait_status("fl", lambda s: s.get("round") == "2/3")
        assert status["metrics"] == {"loss": 0.5, "accuracy": 0.8} and status["phase"] == "Running"
        table = cluster.kubectl("get", "ftj")
        header, row = table.splitlines()[:2]
        assert header.split() == ["NAME", "PHASE", "ROUND", "CLIENTS", "ACCURACY", "AGE"]
        assert row.split()[:5] == ["fl", "Running", "2/3", "2/2", "0.8"]

        board.post(cluster.ns, "fl", document(3, Phase.SUCCEEDED))
        status = cluster.wait_status("fl", lambda s: s.get("phase") == "Succeeded")
        assert status["round"] == "3/3" and status["completionTime"] and status["reason"] == "RunSucceeded"
        wait_for(lambda: cluster.children("fl")["StatefulSet"] == [], 20, "clients removed")
        assert len(cluster.children("fl")["Deployment"]) == 1, "the server is kept after success"
        # The final status, for a server pod re-created after the end (it serves it, runs nothing).
        (final,) = wait_for(lambda: cluster.children("fl")["ConfigMap"], 20, "the final status ConfigMap")
        served = ServerStatus.model_validate_json(final["data"]["status.json"])
        assert (served.phase, served.current_round) == (Phase.SUCCEEDED, 3)
        assert served.job_uid == cluster.job("fl")["metadata"]["uid"]  # type: ignore[index]
        wait_for(lambda: len(cluster.events("fl", "RoundCompleted")) == 3, 20, "one event per round")  # kopf's queue
        assert "RoundCompleted" in cluster.kubectl("describe", "ftj", "fl")
    finally:
        time.sleep(1)
        watch.terminate()
        watched = watch.communicate(timeout=10)[0]
    assert "Running" in watched and "2/3" in watched and "Succeeded" in watched, watched

    wait_for(lambda: cluster.job("fl") is None, 20, "job deleted after ttlSecondsAfterFinished")
    wait_for(lambda: cluster.children("fl")["Deployment"] == [], 20, "server garbage-collected with the job")
    wait_for(lambda: cluster.children("fl")["ConfigMap"] == [], 20, "its final status too")


def test_failed_run_reports_flowers_message(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl")
    board.post(cluster.ns, "fl", document(1, Phase.FAILED, message="ServerApp raised KeyError: 'lr'"))
    status = cluster.wait_status("fl", lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "RunFailed" and "KeyError: 'lr'" in status["message"]
    wait_for(lambda: cluster.children("fl")["StatefulSet"] == [], 20, "clients removed")
    # kopf posts events from its own queue, after the handler has returned: wait for it.
    (event,) = wait_for(lambda: cluster.events("fl", "RunFailed"), 20, "the RunFailed event")
    assert event["type"] == "Warning"


def test_delete_mid_run_removes_every_child(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl")
    board.post(cluster.ns, "fl", document(1))
    cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
    cluster.kubectl("delete", "ftj", "fl", "--wait=true", "--timeout=30s")
    assert cluster.job("fl") is None
    wait_for(lambda: not any(cluster.children("fl").values()), 20, "every child gone")


def test_scale_changes_the_client_replicas(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl")
    cluster.kubectl("scale", "ftj", "fl", "--replicas=4")
    assert cluster.job("fl")["spec"]["clients"]["replicas"] == 4
    (clients,) = wait_for(
        lambda: [s for s in cluster.children("fl")["StatefulSet"] if s["spec"]["replicas"] == 4], 20, "scaled clients"
    )
    env = {e["name"]: e.get("value") for e in clients["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEFLOWER_NUM_PARTITIONS"] == "4"
    cluster.clients_ready("fl", 4)
    cluster.wait_status("fl", lambda s: s.get("clients") == "2/4" and s.get("replicas") == 4)
    # CLIENTS counts what the SuperLink sees connected, not the pods that are ready.
    connected = document(0).model_copy(update={"clients": ClientCounts(connected=4, expected=4)})
    board.post(cluster.ns, "fl", connected)
    cluster.wait_status("fl", lambda s: s.get("clients") == "4/4")
    server = cluster.children("fl")["Deployment"][0]
    assert server["metadata"]["generation"] == 1, "scaling must not touch the server (it would restart the run)"


def test_every_invalid_job_fails_validation_with_no_children(operator: None, cluster: Cluster) -> None:
    names = []
    for i, (_, mutations, field) in enumerate(INVALID):
        document_ = invalid_job(mutations, name=f"bad-{i}")
        if field == "metadata.name":
            # The API server would refuse these names outright; kopf must still be able to address them.
            document_["metadata"]["name"] = "x" * 45 if "long" in INVALID[i][0] else "bad-name-"
        cluster.kube.create({**document_, "metadata": {**document_["metadata"], "namespace": cluster.ns}})
        names.append((document_["metadata"]["name"], field))
    for name, field in names:
        status = cluster.wait_status(name, lambda s: s.get("phase") == "Failed")
        assert status["reason"] == "ValidationFailed", (name, status)
        assert field in status["message"], (name, field, status["message"])
        assert not any(cluster.children(name).values()), name
    assert cluster.events(names[0][0], "ValidationFailed")


def test_unreachable_status_fails_after_the_tolerance(
    lone_kube: KubeServer, board: StatusBoard, tmp_path: Path
) -> None:
    kube = lone_kube
    cluster = Cluster.new_namespace(kube, "unreachable", tmp_path)
    with running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template, KUBEFLOWER_POLL_FAILURE_TOLERANCE="2"):
        start_running(cluster, board, "fl")
        board.post(cluster.ns, "fl", document(1))
        cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
        board.post(cluster.ns, "fl", None)
        time.sleep(1)
        assert cluster.status("fl")["phase"] == "Running", "one failed read is tolerated"
        status = cluster.wait_status("fl", lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "StatusUnreachable" and "503" in status["message"]


def test_operator_restart_mid_job_continues_without_duplicates(
    lone_kube: KubeServer, board: StatusBoard, tmp_path: Path
) -> None:
    kube = lone_kube
    cluster = Cluster.new_namespace(kube, "restart", tmp_path)
    with running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template):
        start_running(cluster, board, "fl")
        board.post(cluster.ns, "fl", document(1))
        cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
    board.post(cluster.ns, "fl", document(2))  # progress while no operator runs
    with running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template):
        cluster.wait_status("fl", lambda s: s.get("round") == "2/3")
        board.post(cluster.ns, "fl", document(3, Phase.SUCCEEDED))
        cluster.wait_status("fl", lambda s: s.get("phase") == "Succeeded")
    children = cluster.children("fl")
    assert len(children["Deployment"]) == 1 and len(children["Service"]) == 1
    # Every posting counts: a repeated event is a second object or a count above 1.
    posted = [
        e["message"].split(" in ")[0] for e in cluster.events("fl", "RoundCompleted") for _ in range(e.get("count", 1))
    ]
    assert sorted(posted) == ["round 1/3", "round 2/3", "round 3/3"], (
        "one event per round, none repeated after the restart"
    )


def test_a_read_write_once_data_claim_for_clients_on_several_nodes_is_a_clear_error(
    operator: None, cluster: Cluster
) -> None:
    for name, modes in (("once", ["ReadWriteOnce"]), ("many", ["ReadOnlyMany"])):
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"data-{name}"}}
        claim["spec"] = {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}}
        cluster.apply(claim)
        cluster.apply_documents(name, [job(name, data={"claimName": f"data-{name}"})])
    status = cluster.wait_status("once", lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "ValidationFailed", status
    assert "spec.data.claimName" in status["message"] and "ReadWriteOnce" in status["message"], status
    assert not any(cluster.children("once").values())
    # A claim many nodes can mount: the job goes on (its server is created).
    wait_for(lambda: cluster.children("many")["Deployment"], 30, "the server of the job with a shareable claim")
    assert cluster.status("many").get("phase") != "Failed"
