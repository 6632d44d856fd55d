"""The real operator against job servers that answer badly on purpose (the job's image is the
user's choice): a drip, a huge body, a redirect, text that is not a document, rounds that make no
sense, NaN metrics, thousands of rounds at once. Each hostile job ends with a reason and never
echoes the body; a well-behaved job beside them keeps being reconciled all the while."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus
from testbed.cluster import Cluster, wait_for
from testbed.kubeserver import KubeServer
from testbed.statusboard import Reply, StatusBoard
from tests.conftest import running_operator
from tests.test_operator import CRDS, document, start_running

SECRET = "SECRET-BODY-TEXT"
"""A marker in every hostile body: it must never reach the job's status."""


def _raw(fields: dict[str, object]) -> Reply:
    return Reply(json.dumps({**fields, "message": SECRET}).encode())


HOSTILE: dict[str, tuple[Reply, str]] = {
    # name: (the server's answer, the reason the job must end with)
    "drip": (Reply(document(1).to_json().encode(), drip=0.2, chunk=4), "StatusUnreachable"),
    "huge": (Reply(b'{"message": "' + SECRET.encode() * 200_000 + b'"}'), "StatusInvalid"),
    "redirect": (
        Reply(SECRET.encode(), status=302, headers=(("Location", "http://127.0.0.1:1/"),)),
        "StatusUnreachable",
    ),
    "not-json": (Reply(f"<html>{SECRET}</html>".encode(), headers=(("Content-Type", "text/html"),)), "StatusInvalid"),
    "negative-round": (_raw({"phase": "Succeeded", "currentRound": -7, "totalRounds": 3}), "StatusInvalid"),
    "round-past-total": (_raw({"phase": "Succeeded", "currentRound": 7, "totalRounds": 3}), "StatusInvalid"),
    "round-past-spec": (_raw({"phase": "Succeeded", "currentRound": 7, "totalRounds": 9}), "StatusInvalid"),
    "round-as-text": (_raw({"phase": "Running", "currentRound": "2", "totalRounds": 3}), "StatusInvalid"),
    "nan-round": (Reply(b'{"phase": "Running", "currentRound": NaN, "totalRounds": 3}'), "StatusInvalid"),
    "long-history": (
        _raw({"currentRound": 5000, "totalRounds": 5000, "history": [{"round": r} for r in range(1, 5001)]}),
        "StatusInvalid",
    ),
}


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(CRDS), "--validate=false")
        yield server


def test_hostile_servers_end_with_a_reason_while_another_job_keeps_being_reconciled(
    kube: KubeServer, tmp_path: Path
) -> None:
    cluster = Cluster.new_namespace(kube, "hostile", tmp_path)
    with (
        StatusBoard() as board,
        running_operator(
            kube,
            KUBEFLOWER_STATUS_URL=board.url_template,
            KUBEFLOWER_POLL_TIMEOUT="1",
            KUBEFLOWER_POLL_FAILURE_TOLERANCE="3",
        ),
    ):
        start_running(cluster, board, "good")
        board.post(cluster.ns, "good", document(1))
        cluster.wait_status("good", lambda s: s.get("round") == "1/3")
        for name in HOSTILE:
            start_running(cluster, board, name)
        reads_before = board.reads_of(cluster.ns, "good")
        for name, (reply, _) in HOSTILE.items():
            board.post(cluster.ns, name, reply)
        ended = {name: cluster.wait_status(name, lambda s: s.get("phase") == "Failed", 60) for name in HOSTILE}
        reads_during = board.reads_of(cluster.ns, "good") - reads_before
        good = cluster.status("good")
    for name, (_, reason) in HOSTILE.items():
        status = ended[name]
        assert status["reason"] == reason, (name, status)
        assert SECRET not in json.dumps(status), f"{name}: the body reached the status"
        assert len(status["message"]) < 1000, name
        assert cluster.events(name, "RunSucceeded") == [], f"{name}: a nonsense document was believed"
    # Every hostile job was read over and over until it failed (3 s of tolerance each) while the
    # good one went on: its own reads are its reconciles (one read each).
    assert reads_during >= 5, reads_during
    assert good["phase"] == "Running" and good["round"] == "1/3", good


def test_nan_metrics_are_reported_not_fatal_and_a_flood_of_rounds_is_few_events(
    kube: KubeServer, tmp_path: Path
) -> None:
    cluster = Cluster.new_namespace(kube, "nan", tmp_path)
    with StatusBoard() as board, running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template):
        start_running(cluster, board, "diverged")
        nan = ServerStatus(phase=Phase.RUNNING, total_rounds=3).with_round(
            RoundRecord(round=1, metrics={"loss": float("nan"), "accuracy": 0.25})
        )
        board.post(cluster.ns, "diverged", nan)
        status = cluster.wait_status("diverged", lambda s: s.get("round") == "1/3")
        assert status["metrics"] == {"accuracy": 0.25} and status["phase"] == "Running", status
        # Reported: the round's event is a Warning that names the metric.
        reported = wait_for(lambda: cluster.events("diverged", "RoundCompleted"), 20, "the round's event")
        assert [(e["type"], "loss=NaN" in e["message"]) for e in reported] == [("Warning", True)], reported
        board.post(cluster.ns, "diverged", document(3, Phase.SUCCEEDED))
        cluster.wait_status("diverged", lambda s: s.get("phase") == "Succeeded")

        start_running(cluster, board, "flood", rounds=1000)
        flood = ServerStatus(phase=Phase.RUNNING, total_rounds=1000)
        for r in range(1, 1001):
            flood = flood.with_round(RoundRecord(round=r, metrics={"loss": 1.0}))
        board.post(cluster.ns, "flood", flood)
        cluster.wait_status("flood", lambda s: s.get("round") == "1000/1000")
        events = wait_for(lambda: cluster.events("flood", "RoundCompleted"), 20, "round events")
    assert len(events) <= 3, [e["message"] for e in events]
    assert any("rounds 1 to 998/1000" in e["message"] for e in events), [e["message"] for e in events]


def test_the_failure_clock_survives_operator_restarts_faster_than_the_tolerance(
    kube: KubeServer, tmp_path: Path
) -> None:
    """The clock of an unreadable status endpoint is kept in the job's status, not in memory."""
    cluster = Cluster.new_namespace(kube, "clock", tmp_path)
    with StatusBoard() as board:
        env = {"KUBEFLOWER_STATUS_URL": board.url_template, "KUBEFLOWER_POLL_FAILURE_TOLERANCE": "6"}
        with running_operator(kube, **env):
            start_running(cluster, board, "fl")
            board.post(cluster.ns, "fl", None)  # the server's endpoint goes dark
            since = cluster.wait_status("fl", lambda s: "statusFailingSince" in s)["statusFailingSince"]
        for _ in range(6):  # each operator lives ~2 s: less than the tolerance
            reads = board.failures
            with running_operator(kube, **env):
                wait_for(
                    lambda reads=reads: board.failures > reads + 2 or cluster.status("fl").get("phase") == "Failed",
                    20,
                    "a few failed reads",
                )
            if cluster.status("fl").get("phase") == "Failed":
                break
        status = cluster.status("fl")
    assert status["phase"] == "Failed" and status["reason"] == "StatusUnreachable", status
    assert status["statusFailingSince"] == since
