"""The real operator (kopf.testing.KopfRunner) against the Kubernetes API test server, driven by
the real kubectl. What a controller or kubelet would do (a Deployment becoming ready) the tests do
through the test server; what a job's server reports comes from a StatusBoard.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeflower.core.environment import SERVER
from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus
from kubeflower_operator import builders
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
    assert sorted(p["metadata"]["name"] for p in found["NetworkPolicy"]) == ["fl-clients", "fl-server"]
    assert sorted(s["metadata"]["name"] for s in found["Secret"]) == ["fl-client-keys", "fl-server-tls"]
    for kind in ("Deployment", "Service", "NetworkPolicy", "Secret"):
        for child in found[kind]:
            assert child["metadata"]["ownerReferences"][0]["uid"] == uid, kind
            assert child["metadata"]["ownerReferences"][0]["controller"] is True
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeflower-operator"
    # Key material stays in the Secrets: not in the job (its status), not in an event.
    secrets = {s["metadata"]["name"]: s["data"] for s in found["Secret"]}
    assert set(secrets["fl-client-keys"]) == {"ca.crt", "client-0.key", "client-1.key"}
    shown = cluster.kubectl("get", "ftj", "fl", "-o", "yaml") + cluster.kubectl("get", "events", "-o", "yaml")
    for data in secrets.values():
        assert not any(value[16:80] in shown for value in data.values())
    assert "PRIVATE KEY" not in shown
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


def test_a_job_the_operator_fails_stops_its_servers_run_and_fleet_port(
    operator: None, cluster: Cluster, board: StatusBoard
) -> None:
    cluster.apply(job("fl", runPolicy={"activeDeadlineSeconds": 2}))
    _server(cluster, "fl")
    cluster.server_ready("fl")
    board.post(cluster.ns, "fl", document(0))
    status = cluster.wait_status("fl", lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "DeadlineExceeded"
    uid = cluster.job("fl")["metadata"]["uid"]
    wait_for(lambda: (cluster.ns, "fl", uid) in board.stops, 20, "the stop sent to the server, with the job's UID")
    (service,) = wait_for(
        lambda: [s for s in cluster.children("fl")["Service"] if len(s["spec"]["ports"]) == 1], 20, "Fleet port removed"
    )
    assert service["spec"]["ports"][0]["name"] == "status", "the status and logs stay served until the TTL"
    (server,) = cluster.children("fl")["Deployment"]
    env = {e["name"]: e.get("value") for e in _containers(server)[0]["env"]}
    assert env["KUBEFLOWER_STOP_TOKEN"] == uid, "the server obeys a stop carrying its job's UID"


def test_delete_mid_run_removes_every_child(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl")
    board.post(cluster.ns, "fl", document(1))
    cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
    cluster.kubectl("delete", "ftj", "fl", "--wait=true", "--timeout=30s")
    assert cluster.job("fl") is None
    cluster.wait_children_gone("fl", 20)


def test_scale_changes_the_client_replicas(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl")
    (before,) = cluster.children("fl")["StatefulSet"]
    keys_before = {s["metadata"]["name"]: s["data"] for s in cluster.children("fl")["Secret"]}
    cluster.kubectl("scale", "ftj", "fl", "--replicas=4")
    assert cluster.job("fl")["spec"]["clients"]["replicas"] == 4
    (clients,) = wait_for(
        lambda: [s for s in cluster.children("fl")["StatefulSet"] if s["spec"]["replicas"] == 4], 20, "scaled clients"
    )
    env = {e["name"]: e.get("value") for e in clients["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEFLOWER_NUM_PARTITIONS"] == "2", "the data's split is fixed when the clients are made"
    assert clients["spec"]["template"] == before["spec"]["template"], "a scale must not restart the clients"
    # The new clients' keys: private keys for their pods, public keys for the server to register.
    secrets = {s["metadata"]["name"]: s["data"] for s in cluster.children("fl")["Secret"]}
    assert {f"client-{i}.key" for i in range(4)} <= set(secrets["fl-client-keys"])
    assert {f"client-{i}.pub" for i in range(4)} <= set(secrets["fl-server-tls"])
    for name, data in keys_before.items():  # the running clients' keys, the CA and the certificate stay
        assert data.items() <= secrets[name].items(), name
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


# --- No wedged job: where a job used to be stuck, it now goes on or ends with a reason. ---


def _server(cluster: Cluster, name: str) -> dict[str, Any]:
    (deployment,) = wait_for(lambda: cluster.children(name)["Deployment"], 20, "server Deployment")
    return dict(deployment)


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest["spec"]["template"]["spec"]["containers"])


def test_a_refused_server_is_the_jobs_reason_until_the_spec_is_fixed(operator: None, cluster: Cluster) -> None:
    def no_bad_images(resource: str, obj: dict[str, Any]) -> str | None:
        images = [
            c.get("image", "") for c in (obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []))
        ]
        bad = [i for i in images if "forbidden-registry" in i]
        return (
            f"spec.template.spec.containers[0].image: Forbidden: {bad[0]} is not an allowed registry" if bad else None
        )

    cluster.kube.admission.append(no_bad_images)
    cluster.apply(job("fl", image="forbidden-registry.example.com/app:1"))
    status = cluster.wait_status("fl", lambda s: s.get("reason") == "ChildRefused")
    assert status["phase"] == "Pending" and "not an allowed registry" in status["message"], status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ChildrenAccepted"]["status"] == "False"
    assert cluster.children("fl")["Deployment"] == []
    (event,) = wait_for(lambda: cluster.events("fl", "ChildRefused"), 20, "the ChildRefused event")
    assert event["type"] == "Warning"

    cluster.kubectl(
        "patch", "ftj", "fl", "--type=merge", "-p", json.dumps({"spec": {"image": "allowed.example.com/app:1"}})
    )
    server = _server(cluster, "fl")
    assert _containers(server)[0]["image"] == "allowed.example.com/app:1"
    status = cluster.wait_status("fl", lambda s: s.get("reason") == "WaitingForServer")
    assert "ChildrenAccepted" not in {c["type"] for c in status["conditions"]}


def test_a_spec_fix_reaches_a_server_that_never_started(operator: None, cluster: Cluster) -> None:
    """Resources no node has: the server never gets ready; removing them replaces the Deployment."""
    cluster.apply(job("fl", server={"resources": {"requests": {"cpu": "64"}}}))
    assert _containers(_server(cluster, "fl"))[0]["resources"]["requests"]["cpu"] == "64"
    cluster.kubectl("patch", "ftj", "fl", "--type=json", "-p", '[{"op": "remove", "path": "/spec/server/resources"}]')
    defaults = builders.with_defaults({}, builders.SERVER_RESOURCES)  # the server's own, without the 64 CPUs
    fixed = wait_for(
        lambda: [d for d in cluster.children("fl")["Deployment"] if _containers(d)[0]["resources"] == defaults],
        20,
        "the server replaced without its resources",
    )
    uid = cluster.job("fl")["metadata"]["uid"]
    assert fixed[0]["metadata"]["ownerReferences"][0]["uid"] == uid, "a replace keeps the owner"


def test_a_removed_node_selector_leaves_the_clients(operator: None, cluster: Cluster, board: StatusBoard) -> None:
    start_running(cluster, board, "fl", clients={"replicas": 2, "nodeSelector": {"pool": "gpu"}})
    (clients,) = cluster.children("fl")["StatefulSet"]
    assert clients["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}
    cluster.kubectl(
        "patch", "ftj", "fl", "--type=json", "-p", '[{"op": "remove", "path": "/spec/clients/nodeSelector"}]'
    )
    wait_for(
        lambda: [
            s for s in cluster.children("fl")["StatefulSet"] if "nodeSelector" not in s["spec"]["template"]["spec"]
        ],
        20,
        "the clients without the nodeSelector",
    )
    cluster.kubectl("patch", "ftj", "fl", "--type=merge", "-p", '{"spec": {"service": {"type": "NodePort"}}}')
    wait_for(
        lambda: [s for s in cluster.children("fl")["Service"] if s["spec"]["type"] == "NodePort"],
        20,
        "a NodePort Service",
    )


def _another_owner(cluster: Cluster) -> dict[str, Any]:
    """An owner reference to an object that exists and is not a job: an object whose owners are
    all gone would be garbage-collected at once, as on a cluster."""
    owner = cluster.kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-else", "namespace": cluster.ns}}
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "someone-else",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }


def test_a_name_taken_by_another_owner_is_a_conflict_not_adopted(operator: None, cluster: Cluster) -> None:
    other = _another_owner(cluster)
    taken = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fl-server", "namespace": cluster.ns, "ownerReferences": [other]},
        "spec": {"ports": [{"port": 80}]},
    }
    cluster.kube.create(taken)
    cluster.apply(job("fl"))
    status = cluster.wait_status("fl", lambda s: s.get("reason") == "ChildRefused")
    assert "Service fl-server already exists and belongs to" in status["message"] and other["uid"] in status["message"]
    (service,) = cluster.children("fl")["Service"] or [cluster.kube.get("v1", "services", cluster.ns, "fl-server")]
    assert service["metadata"]["ownerReferences"] == [other], "never adopted"
    assert service["spec"]["ports"] == [{"port": 80}], "never overwritten"


def test_a_secret_name_taken_by_another_owner_is_a_conflict_and_no_pod_is_made(
    operator: None, cluster: Cluster
) -> None:
    """The job's keys go through the same owner check as its other children: another owner's
    Secret is never read for keys, patched or adopted, and nothing that would mount it is made."""
    other = _another_owner(cluster)
    taken = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fl-client-keys", "namespace": cluster.ns, "ownerReferences": [other]},
        "data": {"note": "c29tZW9uZSBlbHNl"},
    }
    cluster.kube.create(taken)
    cluster.apply(job("fl"))
    status = cluster.wait_status("fl", lambda s: s.get("reason") == "ChildRefused")
    assert "Secret fl-client-keys already exists and belongs to" in status["message"]
    assert other["uid"] in status["message"]
    secret = cluster.kube.get("v1", "secrets", cluster.ns, "fl-client-keys")
    assert secret["metadata"]["ownerReferences"] == [other], "never adopted"
    assert secret["data"] == taken["data"], "never written"
    assert cluster.children("fl")["Deployment"] == [] and cluster.children("fl")["StatefulSet"] == []


def test_server_pods_made_anew_count_against_the_backoff_limit(
    operator: None, cluster: Cluster, board: StatusBoard
) -> None:
    start_running(cluster, board, "fl", runPolicy={"backoffLimit": 1})
    labels = builders.labels("fl", SERVER)
    for i in range(3):  # the first pod, then two made anew (an eviction, a lost node)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"fl-server-{i}", "namespace": cluster.ns, "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "x"}]},
        }
        cluster.kube.create(pod)
        wait_for(
            lambda i=i: (cluster.status("fl").get("serverPod") or "").endswith(
                cluster.kube.get("v1", "pods", cluster.ns, f"fl-server-{i}")["metadata"]["uid"]
            ),
            20,
            f"pod {i} seen",
        )
        if i < 2:
            cluster.kube.delete("v1", "pods", cluster.ns, f"fl-server-{i}")
    status = cluster.wait_status("fl", lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "BackoffLimitExceeded" and status["serverRestarts"] == 2, status


def test_children_are_watched_with_server_side_label_selectors(operator: None, kube: KubeServer) -> None:
    """The operator asks the API server for its own children only, not every object of the cluster."""
    wanted = {
        "/deployments": "managed-by",
        "/statefulsets": "managed-by",
        "/services": "managed-by",
        "/networkpolicies": "managed-by",
        "/configmaps": "managed-by",
        "/pods": "component",
    }
    for suffix, label in wanted.items():
        lists = wait_for(
            lambda suffix=suffix: [r for r in kube.requests if r.method == "GET" and r.path.endswith(suffix)],
            20,
            f"the operator's watch of {suffix}",
        )
        assert all(label in urllib.parse.unquote(r.query) for r in lists), (suffix, [r.query for r in lists])


def _rbac_request(method: str, path: str, watch: bool) -> tuple[str, str, str] | None:
    """(API group, resource, verb) of a request, as RBAC sees it; None for discovery."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1] if len(parts) > 1 else "", parts[3:])
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    name = rest[1] if len(rest) > 1 else None
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}
    verb = ("watch" if watch else "get" if name else "list") if method == "GET" else verbs[method]
    return group, resource, verb


def test_every_request_of_the_operator_is_granted_and_every_grant_is_used(
    lone_kube: KubeServer, board: StatusBoard, tmp_path: Path
) -> None:
    """deploy/rbac.yaml against the requests the real operator makes through a job's life: a
    missing grant would break it on a cluster; a grant it never uses is privilege for nothing."""
    kube = lone_kube
    cluster = Cluster.new_namespace(kube, "rbac", tmp_path)

    def create(document: dict[str, Any]) -> None:  # the API directly: only the operator's requests are logged
        kube.create({**document, "metadata": {**document["metadata"], "namespace": cluster.ns}})

    kube.requests.clear()
    with running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template):
        create(job("fl", runPolicy={"ttlSecondsAfterFinished": 1}, data={"claimName": "shared-data"}))
        _server(cluster, "fl")
        cluster.server_ready("fl")
        board.post(cluster.ns, "fl", document(1))
        wait_for(lambda: cluster.children("fl")["StatefulSet"], 20, "clients")
        cluster.clients_ready("fl", 2)
        cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
        # A scale (keys added to the job's Secrets), a service type change, a suspend.
        spec = {
            "spec": {
                "clients": {"replicas": 3},
                "service": {"type": "NodePort"},
                "runPolicy": {"suspend": True, "ttlSecondsAfterFinished": 1},
            }
        }
        kube.patch("kubeflower.io/v1alpha1", "federatedtrainingjobs", cluster.ns, "fl", spec)
        wait_for(lambda: cluster.children("fl")["Deployment"][0]["spec"]["replicas"] == 0, 20, "suspended")
        board.post(cluster.ns, "fl", document(3, Phase.SUCCEEDED))
        wait_for(lambda: cluster.job("fl") is None, 30, "the job deleted after its TTL")
        owner = _another_owner(cluster)
        create(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken-server", "ownerReferences": [owner]}}
        )
        create(job("taken"))
        cluster.wait_status("taken", lambda s: s.get("reason") == "ChildRefused")
        # A cert-manager issuer where cert-manager is not installed: its Certificate read and created.
        create(job("issued", security={"issuerRef": {"name": "team-ca"}}))
        cluster.wait_status("issued", lambda s: "install cert-manager" in s.get("message", ""))
    used = {r for q in kube.requests if (r := _rbac_request(q.method, q.path, q.is_watch)) is not None}
    rbac = yaml.safe_load_all((Path(__file__).resolve().parents[1] / "deploy" / "rbac.yaml").read_text())
    (role,) = [d for d in rbac if d["kind"] == "ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used - granted == set(), "requests the ClusterRole does not allow"
    not_here = {
        # A 409 on create is read back by kind; this life met one on a Service only.
        ("apps", "deployments", "get"),
        ("apps", "statefulsets", "get"),
        ("networking.k8s.io", "networkpolicies", "get"),
        ("", "configmaps", "get"),
        # The server is replaced when its spec changes before its run starts (this one had started).
        ("apps", "deployments", "update"),
        # Children go with their job through owner references; cleanPolicy All deletes these.
        ("apps", "deployments", "delete"),
        ("", "services", "delete"),
        ("networking.k8s.io", "networkpolicies", "delete"),
        ("", "configmaps", "delete"),
    }
    assert granted - used == not_here, "grants no request used (or the list above is stale)"


def test_a_namespaced_operator_leaves_other_namespaces_alone(
    lone_kube: KubeServer, board: StatusBoard, tmp_path: Path
) -> None:
    watched = Cluster.new_namespace(lone_kube, "ml-team", tmp_path)
    other = Cluster.new_namespace(lone_kube, "elsewhere", tmp_path)
    with running_operator(lone_kube, namespaces=("ml-team",), KUBEFLOWER_STATUS_URL=board.url_template):
        other.apply(job("fl"))
        watched.apply(job("fl"))
        _server(watched, "fl")
        watched.wait_status("fl", lambda s: s.get("phase") == "Pending")
    assert other.children("fl")["Deployment"] == [] and "status" not in (other.job("fl") or {})
