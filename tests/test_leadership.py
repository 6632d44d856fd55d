"""Leader election with fencing: operator processes (`kopf run`, as in a pod) against the Kubernetes
API test server. Only the Lease holder reconciles; a killed holder is replaced within 15 s and the
job goes on; a holder stopped (SIGSTOP) past its Lease writes nothing when it wakes (SIGCONT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeflower.core.server_status import Phase
from kubeflower_operator.leadership import EXIT_LOST, LEASE_DURATION, LEASE_NAME, RETRY_PERIOD
from testbed.cluster import Cluster, wait_for
from testbed.jobs import job
from testbed.kubeserver import KubeServer
from testbed.statusboard import StatusBoard
from tests.conftest import free_port
from tests.test_metrics import scrape
from tests.test_operator import document

LEASE_NAMESPACE = "kubeflower-system"
LEASE = ("coordination.k8s.io/v1", "leases", LEASE_NAMESPACE, LEASE_NAME)


class Operator:
    """One operator process with leader election on, its output in a file."""

    def __init__(self, kube: KubeServer, board: StatusBoard, folder: Path, tag: str) -> None:
        self.tag, self.metrics_port = tag, free_port()
        self.log = folder / f"operator-{tag}.log"
        env = {
            **os.environ,
            "KUBECONFIG": kube.kubeconfig,
            "KUBEFLOWER_LEADER_ELECTION": "true",
            "KUBEFLOWER_LEASE_NAMESPACE": LEASE_NAMESPACE,
            "KUBEFLOWER_STATUS_URL": board.url_template,
            "KUBEFLOWER_METRICS_PORT": str(self.metrics_port),
            "KUBEFLOWER_RECONCILE_INTERVAL": "0.3",
        }
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("kopf")),
                    "run",
                    "--standalone",
                    "--all-namespaces",
                    "-m",
                    "kubeflower_operator.handlers",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def holds(self, kube: KubeServer) -> bool:
        holder = ((kube.get(*LEASE) or {}).get("spec") or {}).get("holderIdentity") or ""
        return f"_{self.process.pid}_" in holder

    def standing_by(self) -> bool:
        return "standing by" in self.output()

    def reconciles(self) -> float:
        return sum(v for k, v in scrape(self.metrics_port).items() if k.startswith("kubeflower_reconciles_total{"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(Path(__file__).resolve().parents[1] / "crds"), "--validate=false")
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}})
        yield server


def test_one_leader_works_hands_over_when_killed_and_a_stopped_one_writes_nothing_on_waking(
    kube: KubeServer, tmp_path: Path
) -> None:
    cluster = Cluster.new_namespace(kube, "ha", tmp_path)
    operators: list[Operator] = []
    with StatusBoard() as board:
        try:
            a = Operator(kube, board, tmp_path, "a")
            operators.append(a)
            wait_for(lambda: a.holds(kube), 60, f"operator a to lead: {a.output()[-2000:]}")
            b = Operator(kube, board, tmp_path, "b")
            operators.append(b)
            wait_for(b.standing_by, 60, f"operator b to stand by: {b.output()[-2000:]}")

            # The leader runs the job; the standby does nothing.
            cluster.apply(job("fl"))
            (server,) = wait_for(lambda: cluster.children("fl")["Deployment"], 20, "server Deployment")
            cluster.server_ready("fl")
            board.post(cluster.ns, "fl", document(0))
            wait_for(lambda: cluster.children("fl")["StatefulSet"], 20, "client StatefulSet")
            cluster.clients_ready("fl", 2)
            board.post(cluster.ns, "fl", document(1))
            cluster.wait_status("fl", lambda s: s.get("round") == "1/3")
            assert a.reconciles() > 0 and b.reconciles() == 0

            # Killed: the standby takes over within 15 s and the job goes on.
            killed = time.monotonic()
            a.process.kill()
            wait_for(lambda: b.holds(kube), 20, f"operator b to lead: {b.output()[-2000:]}")
            handover = time.monotonic() - killed
            assert handover < LEASE_DURATION + 2 * RETRY_PERIOD + 1 < 15, handover
            board.post(cluster.ns, "fl", document(2))
            cluster.wait_status("fl", lambda s: s.get("round") == "2/3")

            # Stopped past its Lease: a third operator takes over and finishes the job ...
            c = Operator(kube, board, tmp_path, "c")
            operators.append(c)
            wait_for(c.standing_by, 60, f"operator c to stand by: {c.output()[-2000:]}")
            b.process.send_signal(signal.SIGSTOP)
            wait_for(lambda: c.holds(kube), 20, f"operator c to lead: {c.output()[-2000:]}")
            board.post(cluster.ns, "fl", document(3, Phase.SUCCEEDED))
            cluster.wait_status("fl", lambda s: s.get("phase") == "Succeeded")
            wait_for(lambda: cluster.children("fl")["StatefulSet"] == [], 20, "clients removed")
            wait_for(lambda: len(cluster.events("fl", "RunSucceeded")) == 1, 20, "the verdict's event")
            # ... while the stopped one still believes it leads at round 2, with a verdict to write.
            mark = len(kube.requests)
            b.process.send_signal(signal.SIGCONT)
            assert b.process.wait(timeout=20) == EXIT_LOST, b.output()[-3000:]
            writes = [r for r in kube.requests.snapshot()[mark:] if r.method != "GET" and "/leases/" not in r.path]
            assert writes == [], "the woken operator (or the finished job) wrote"
            assert "woke after the Lease's renew deadline" in b.output() or "was not renewed" in b.output()

            # One of each child, never recreated; one event per round and one verdict.
            children = cluster.children("fl")
            assert [d["metadata"]["uid"] for d in children["Deployment"]] == [server["metadata"]["uid"]]
            assert len(children["Service"]) == 1 and len(children["NetworkPolicy"]) == len(children["Secret"]) == 2
            rounds = sorted(e["message"] for e in cluster.events("fl", "RoundCompleted"))
            assert len(rounds) == 3 and len(set(rounds)) == 3, rounds
            assert len(cluster.events("fl", "RunSucceeded")) == 1

            # A clean stop gives the Lease up.
            c.stop()
            assert c.process.returncode == 0, c.output()[-3000:]
            assert not ((kube.get(*LEASE) or {}).get("spec") or {}).get("holderIdentity")
        finally:
            for operator in operators:
                operator.stop()
    print(f"hand-over after the leader was killed: {handover:.1f} s")
