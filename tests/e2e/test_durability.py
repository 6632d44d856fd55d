"""End to end: results that outlive the server pod (spec.output), a resume after the server pod is
deleted, and a finished job's server that is re-created without running again.

Two jobs on the same seed run side by side: `kept` writes to an output claim (in the pod runner a
claim is a folder that outlives every pod) and loses its server pod after round 3; `plain` has no
output volume and runs uninterrupted, the reference for the final accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import Cluster, wait_for
from testbed.jobs import job

pytestmark = pytest.mark.e2e

ROUNDS = 6
RUN = 600
"""Seconds for both 6-round jobs side by side on a busy 2-CPU machine, a server restart included."""
CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "results"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


def _rounds_seen(lines: list[str], name: str) -> list[int]:
    """The ROUND column of `kubectl get ftj -w` for one job, in the order seen."""
    seen = []
    for line in lines:
        columns = line.split()
        if columns and columns[0] == name and len(columns) > 2 and "/" in columns[2]:
            seen.append(int(columns[2].split("/")[0]))
    return seen


def _new_server(cluster: Cluster, name: str, old: str) -> dict[str, Any]:
    """The server's status document, once served by a pod other than `old`."""
    wait_for(lambda: all(p["metadata"]["name"] != old for p in cluster.pods(name, "server")), 120, "the old pod gone")
    return wait_for(lambda: cluster.server_document(name), 120, f"a new server pod of {name} serving")


def _command(pid: int) -> str:
    """A process's command line ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _delete_server_pod(cluster: Cluster, name: str) -> str:
    (pod,) = cluster.pods(name, "server")
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
    return str(pod["metadata"]["name"])


def test_a_deleted_server_pod_resumes_from_its_output_claim_and_a_finished_job_never_reruns(
    cluster: Cluster,
) -> None:
    cluster.apply(CLAIM)
    with cluster.watching("ftj") as watched:
        cluster.apply_documents(
            "jobs", [job("kept", rounds=ROUNDS, output={"claimName": "results"}), job("plain", rounds=ROUNDS)]
        )
        status = cluster.wait_status("kept", lambda s: s.get("currentRound", 0) >= 3, RUN, "round 3")
        assert status["results"].startswith("persistentVolumeClaim results"), status
        deleted = _delete_server_pod(cluster, "kept")  # a new pod: fresh emptyDirs, only the claim stays

        resumed = wait_for(lambda: cluster.events("kept", "Resumed"), RUN, "the Resumed event")
        kept = cluster.wait_status("kept", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end")
        plain = cluster.wait_status("plain", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end")
    assert kept["phase"] == "Succeeded" and kept["round"] == f"{ROUNDS}/{ROUNDS}", kept
    assert plain["phase"] == "Succeeded", plain
    assert kept["resumedRound"] >= 3 and f"after round {kept['resumedRound']}/" in resumed[0]["message"], resumed
    seen = _rounds_seen(watched, "kept")
    assert seen == sorted(seen) and seen[-1] == ROUNDS, seen  # never back a round, through the restart
    assert abs(kept["metrics"]["accuracy"] - plain["metrics"]["accuracy"]) <= 0.01, (kept, plain)

    claim = cluster.runner.claim_folder(cluster.ns, "results")
    document = json.loads((claim / "metrics.json").read_text())
    assert [r["round"] for r in document["history"]] == list(range(1, ROUNDS + 1)), document["history"]
    assert sorted(p.name for p in (claim / "checkpoints").glob("*.json"))[-1] == f"round-{ROUNDS:06d}.json"
    log = (claim / "logs" / "server.log").read_text()  # both pods' logs, the SuperLink's lines too
    assert "starting the SuperLink" in log and f"resuming after round {kept['resumedRound']}" in log

    # A finished job's server pod re-created, with its claim and without one: it serves the final
    # state and runs nothing (no SuperLink), and the job stays Succeeded.
    for name in ("kept", "plain"):
        wait_for(lambda n=name: not cluster.processes(n, "clients"), 120, f"{name}'s clients gone (cleanPolicy)")
    for name, old in ((n, _delete_server_pod(cluster, n)) for n in ("kept", "plain")):
        assert old != deleted
        served = _new_server(cluster, name, old)
        assert served["phase"] == "Succeeded" and served["currentRound"] == ROUNDS, served
        commands = [_command(pid) for pid in cluster.processes(name, "server")]
        assert any("kubeflower-server" in c for c in commands), commands  # the server runs ...
        assert not any("flower-superlink" in c for c in commands), commands  # ... and no SuperLink
        status = cluster.status(name)
        assert status["phase"] == "Succeeded" and status["round"] == f"{ROUNDS}/{ROUNDS}", status
        assert not cluster.processes(name, "clients")
    assert len(cluster.server_document("kept")["history"]) == ROUNDS  # type: ignore[index]

    # The job goes; its results stay on the claim.
    cluster.kubectl("delete", "ftj", "kept", "--wait=false")
    wait_for(lambda: cluster.job("kept") is None, 60, "kept deleted")
    try:
        wait_for(lambda: not cluster.pods("kept", "server") and not cluster.processes("kept"), 180, "kept's pods gone")
    except AssertionError:
        left = [
            (p["metadata"]["name"], p["metadata"].get("deletionTimestamp"), p.get("status"))
            for p in cluster.pods("kept", "server")
        ]
        raise AssertionError(f"kept's pods not gone: {left}; processes {cluster.processes('kept')}") from None
    assert (claim / "final_model.pt").stat().st_size > 0
    assert json.loads((claim / "metrics.json").read_text())["phase"] == "Succeeded"
