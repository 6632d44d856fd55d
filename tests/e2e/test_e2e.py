"""End to end: `kubectl apply` -> the operator's objects -> pods running as local processes (the
rendered commands and environment, unchanged) -> the workload's status -> `kubectl get ftj`.

Each test gets a fresh cluster (tests/e2e/conftest.py): the API test server, the pod runner
(testbed/podrunner) and the operator installed from deploy/ as a pod of its own. Waits are
`wait_for` with generous timeouts; a Flower round costs 8-15 s on this kind of machine.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from typing import Any

import pytest
import yaml

from testbed.cluster import REPO, Cluster, wait_for
from testbed.jobs import job

pytestmark = pytest.mark.e2e

RUN = 240
"""Seconds a whole job may take here (3 rounds: ~60 s; up to 4x slower on a busy machine)."""
GONE = 60
"""Seconds for pods to terminate (SIGTERM, up to the 30 s grace period, SIGKILL)."""


def example(name: str, **run_policy: Any) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "examples" / "digits-fedavg.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"].setdefault("runPolicy", {}).update(run_policy)
    return document


def running(cluster: Cluster, name: str, rounds_done: int = 1) -> dict[str, Any]:
    """Wait until the job is Running with all its clients and at least `rounds_done` rounds."""
    return cluster.wait_status(
        name,
        lambda s: s.get("phase") == "Running" and s.get("currentRound", 0) >= rounds_done,
        RUN,
        f"round {rounds_done}",
    )


def succeeded(cluster: Cluster, name: str) -> dict[str, Any]:
    status = cluster.wait_status(name, lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end of the run")
    assert status["phase"] == "Succeeded", status
    return status


def test_apply_the_digits_job_to_success_then_ttl(cluster: Cluster) -> None:
    with cluster.watching("ftj") as watched:
        cluster.apply_documents("digits", [example("digits-fedavg", ttlSecondsAfterFinished=5)])
        # CLIENTS: the SuperNodes the SuperLink sees connected (their pods ready on the gRPC health probe).
        status = cluster.wait_status(
            "digits-fedavg", lambda s: s.get("phase") == "Running" and s.get("clients") == "2/2", RUN, "Running"
        )
        assert status["clients"] == "2/2" and status["serverAddress"] == f"digits-fedavg-server.{cluster.ns}.svc:9092"
        for r in (1, 2):
            running(cluster, "digits-fedavg", r)
        status = succeeded(cluster, "digits-fedavg")
        assert status["round"] == "3/3" and status["reason"] == "RunSucceeded" and status["completionTime"]
        assert status["metrics"]["accuracy"] > 0.8, status["metrics"]

        # The clients go (objects and processes), the server stays, serving its final status.
        wait_for(
            lambda: (
                not cluster.children("digits-fedavg")["StatefulSet"] and not cluster.pods("digits-fedavg", "clients")
            ),
            GONE,
            "the clients' StatefulSet and pods removed",
        )
        wait_for(lambda: not cluster.processes("digits-fedavg", "clients"), GONE, "the clients' processes ended")
        row = wait_for(
            lambda: (r := cluster.kubectl("get", "ftj", "digits-fedavg").split("\n")[1].split())[3] == "0/0" and r,
            10,
            "no client left in the CLIENTS column",
        )
        assert row[:3] == ["digits-fedavg", "Succeeded", "3/3"], row
        assert len(cluster.pods("digits-fedavg", "server")) == 1 and cluster.processes("digits-fedavg", "server")
        document = cluster.server_document("digits-fedavg")
        assert document is not None and document["phase"] == "Succeeded" and document["currentRound"] == 3, document
        assert [r["replies"] for r in document["history"]] == [2, 2, 2], "every round trains on both clients"
        assert len(cluster.events("digits-fedavg", "RoundCompleted")) == 3

        wait_for(
            lambda: any(" Succeeded " in line and " 0/0 " in line for line in watched),
            30,
            "the end in `kubectl get -w`",
        )

        # ttlSecondsAfterFinished: the job goes, and everything with it.
        wait_for(lambda: cluster.job("digits-fedavg") is None, 30, "the job deleted after its TTL (5 s)")
        cluster.wait_children_gone("digits-fedavg", GONE)
        wait_for(lambda: not cluster.processes("digits-fedavg"), GONE, "every process of the job ended")
    print("\n".join(["$ kubectl get ftj -w", *watched]))
    rows = [line.split() for line in watched if line.startswith("digits-fedavg")]
    phases = [row[1] for row in rows]
    assert "Running" in phases and phases[-1] == "Succeeded", watched
    rounds = [row[2] for row in rows if row[1] == "Running"]
    assert "1/3" in rounds or "2/3" in rounds, f"the rounds counting up: {watched}"
    assert re.fullmatch(r"0\.\d{1,4}", rows[-1][4]), f"the accuracy column, 4 significant digits: {watched}"


def test_delete_mid_run_removes_every_object_and_process(cluster: Cluster) -> None:
    cluster.apply_documents("job", [job("doomed")])
    running(cluster, "doomed", 1)
    pods = cluster.names("doomed")["Pod"]
    assert len(pods) == 3 and cluster.processes("doomed", "server") and cluster.processes("doomed", "clients")

    cluster.kubectl("delete", "ftj", "doomed", "--wait=true", "--timeout=60s", timeout=90)
    assert cluster.job("doomed") is None
    cluster.wait_children_gone("doomed", GONE)
    wait_for(lambda: not cluster.processes("doomed"), GONE, "every process of the job ended")
    left = [n for n in cluster.runner.network.names() if any(p in n for p in pods)]
    assert left == [], f"the pods' network namespaces: {left}"


def test_operator_restart_mid_run_continues_without_duplicates(cluster: Cluster) -> None:
    columns = 'jsonpath={.status.phase}|{.status.currentRound}|{.status.startTime}{"\\n"}'
    cluster.apply_documents("job", [job("phoenix", rounds=4)])
    with cluster.watching("ftj", "phoenix", "-o", columns) as watched:  # a named get needs the job to exist
        status = running(cluster, "phoenix", 1)
        children = cluster.children("phoenix")
        # Not the pods, nor the final-status ConfigMap: it exists only once the job finished.
        uids = {
            kind: sorted(o["metadata"]["uid"] for o in objs)
            for kind, objs in children.items()
            if kind not in ("Pod", "ConfigMap")
        }
        assert all(len(v) == 1 for v in uids.values()), uids

        cluster.scale_operator(0)
        wait_for(lambda: not cluster.operator_pods(), GONE, "the operator's pod gone")
        # The federation goes on without an operator: the server's own document shows it.
        wait_for(
            lambda: (d := cluster.server_document("phoenix")) and d["currentRound"] > status["currentRound"],
            RUN,
            "a round finished while no operator runs",
        )
        cluster.scale_operator(1)
        cluster.wait_operator_started()

        status = succeeded(cluster, "phoenix")
        assert status["round"] == "4/4" and status["serverRestarts"] == 0
        wait_for(
            lambda: any(line.startswith("Succeeded|") for line in watched),
            30,
            f"the end in `kubectl get -w`: {watched}",
        )
    again = {
        kind: sorted(o["metadata"]["uid"] for o in objs)
        for kind, objs in cluster.children("phoenix").items()
        if kind != "Pod"
    }
    for kind in ("Deployment", "ReplicaSet", "Service", "NetworkPolicy"):
        assert again[kind] == uids[kind], f"{kind}: the same object throughout, never a second one"
    created = {
        kind: cluster.kube.requests.count("POST", f"/namespaces/{cluster.ns}/{kind}")
        for kind in ("deployments", "statefulsets")
    }
    assert created == {"deployments": 1, "statefulsets": 1}, created
    # A continuous status: phases only move forward, rounds never go back, one start time.
    rows = [line.split("|") for line in watched if line.strip("|")]  # the first: before any status
    order = {"Pending": 0, "Running": 1, "Succeeded": 2}
    assert rows and all(len(row) == 3 and row[0] in order for row in rows), watched
    phases = [order[row[0]] for row in rows]
    rounds = [int(row[1]) for row in rows]
    assert phases == sorted(phases) and rounds == sorted(rounds), watched
    assert len({row[2] for row in rows}) == 1, watched
    messages = [e["message"] for e in cluster.events("phoenix", "RoundCompleted")]
    assert len(messages) == 4 and len(set(messages)) == 4, messages


def _kill(cluster: Cluster, pod: str) -> int:
    pid = cluster.runner.container_pid(cluster.ns, pod)
    assert pid is not None, f"{pod} runs no container"
    os.kill(pid, signal.SIGKILL)
    return pid


def _restarted(cluster: Cluster, pod_name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = cluster.kube.get("v1", "pods", cluster.ns, pod_name)
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
        return (
            statuses[0] if statuses[0].get("restartCount") == 1 and "running" in statuses[0].get("state", {}) else None
        )

    status = wait_for(check, 60, f"{pod_name} restarted")
    assert status["lastState"]["terminated"]["exitCode"] == 137, status
    return status


def test_a_killed_client_is_restarted_and_the_job_completes(cluster: Cluster) -> None:
    cluster.apply_documents("job", [job("resilient")])
    running(cluster, "resilient", 1)
    _kill(cluster, "resilient-clients-1")
    _restarted(cluster, "resilient-clients-1")  # the same pod, so the same partition (its ordinal)
    status = succeeded(cluster, "resilient")
    assert status["round"] == "3/3"


def test_a_hung_client_is_restarted_by_its_liveness_probe_and_the_job_completes(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A SuperNode that stops answering (SIGSTOP: alive, silent) fails its gRPC liveness probe on
    Flower's health server; the kubelet restarts the container and the job completes."""
    caplog.set_level(logging.INFO, logger="testbed.podrunner.kubelet")
    cluster.apply_documents("job", [job("hung")])
    running(cluster, "hung", 1)
    pod = "hung-clients-1"
    stopped = [
        pid
        for pid, where in cluster.processes("hung", "clients").items()
        if where == f"{cluster.ns}/{pod}" and "flower-supernode" in _command(pid)
    ]
    assert stopped, cluster.processes("hung", "clients")
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)

    def restarted() -> dict[str, Any] | None:
        pod_now = cluster.kube.get("v1", "pods", cluster.ns, pod)
        statuses = ((pod_now or {}).get("status") or {}).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 1 else None

    # Liveness: 6 failures 10 s apart, then SIGTERM and, the stopped SuperNode ignoring it, SIGKILL.
    wait_for(restarted, 180, f"{pod} restarted by its liveness probe")
    assert not set(stopped) & set(cluster.processes("hung", "clients")), "the hung SuperNode is gone"
    why = [r.getMessage() for r in caplog.records if f"/{pod} container" in r.getMessage()]
    assert any("failed its liveness probe" in line for line in why), why  # the probe, not a crash
    status = succeeded(cluster, "hung")
    assert status["round"] == "3/3", status


def _command(pid: int) -> str:
    """A process's command line ("" once it has gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_killed_server_is_restarted_and_the_job_ends_with_a_verdict(cluster: Cluster) -> None:
    cluster.apply_documents("job", [job("phoenix-server", rounds=2)])
    # Mid-run: both clients connected, the first round training.
    wait_for(
        lambda: (
            (d := cluster.server_document("phoenix-server"))
            and d["phase"] == "Running"
            and d["clients"]["connected"] == 2
        ),
        RUN,
        "the run under way",
    )
    (server,) = cluster.pods("phoenix-server", "server")
    _kill(cluster, server["metadata"]["name"])
    _restarted(cluster, server["metadata"]["name"])
    cluster.wait_status("phoenix-server", lambda s: s.get("serverRestarts") == 1, 30, "the restart counted")
    wait_for(lambda: cluster.events("phoenix-server", "ServerRestarted"), 30, "the ServerRestarted event")
    assert "ServerRestarted" in cluster.kubectl("describe", "ftj", "phoenix-server")
    # backoffLimit 3 tolerates one restart: the new server starts the run over, and it ends.
    status = cluster.wait_status(
        "phoenix-server", lambda s: s.get("phase") in ("Succeeded", "Failed"), 2 * RUN, "a verdict"
    )
    assert status["phase"] == "Succeeded" or (status["reason"] and status["message"]), status


def test_a_server_restart_past_the_backoff_limit_fails_the_job(cluster: Cluster) -> None:
    cluster.apply_documents("job", [job("fragile", runPolicy={"backoffLimit": 0})])
    cluster.wait_status("fragile", lambda s: s.get("phase") == "Running", RUN, "Running")
    (server,) = cluster.pods("fragile", "server")
    _kill(cluster, server["metadata"]["name"])
    status = cluster.wait_status("fragile", lambda s: s.get("phase") == "Failed", 60, "Failed")
    assert status["reason"] == "BackoffLimitExceeded" and "backoffLimit=0" in status["message"], status
    wait_for(lambda: not cluster.processes("fragile", "clients"), GONE, "the clients removed")


def test_two_jobs_in_one_namespace_both_complete_apart(cluster: Cluster) -> None:
    cluster.apply_documents("jobs", [job("alpha", rounds=2), job("beta", rounds=2)])
    for name in ("alpha", "beta"):
        status = succeeded(cluster, name)
        assert status["round"] == "2/2" and status["serverRestarts"] == 0
    uids = {name: cluster.job(name)["metadata"]["uid"] for name in ("alpha", "beta")}
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        for kind, objects in cluster.children(name).items():
            for obj in objects:
                assert other not in obj["metadata"]["name"], (kind, obj["metadata"]["name"])
                if kind in ("Deployment", "Service", "NetworkPolicy"):
                    assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uids[name]], (
                        kind,
                        obj["metadata"],
                    )
                if kind in ("Deployment", "NetworkPolicy"):  # a Service's spec gets its clusterIP from the runner
                    assert obj["metadata"]["generation"] == 1, f"{kind} {obj['metadata']['name']} was changed"
        document = cluster.server_document(name)
        assert document is not None and document["phase"] == "Succeeded", document
        assert [r["replies"] for r in document["history"]] == [2, 2], f"{name}'s server saw only its own two clients"
        # Each job's writes name only its own objects; its clients went exactly once.
        assert cluster.kube.requests.count("DELETE", f"/statefulsets/{name}-clients") == 1
    for path in ("/deployments/", "/services/", "/networkpolicies/"):
        assert cluster.kube.requests.count("DELETE", path) == 0 and cluster.kube.requests.count("PATCH", path) == 0
