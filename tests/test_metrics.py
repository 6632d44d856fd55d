"""The operator's own metrics, scraped from its port while the real operator runs a job against
the Kubernetes API test server, compared with what the test itself did and saw."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeflower.core.server_status import Phase
from kubeflower.core.validation import parse_job
from kubeflower_operator import builders
from kubeflower_operator.settings import Settings
from testbed.cluster import Cluster, wait_for
from testbed.jobs import job
from testbed.kubeserver import KubeServer
from testbed.statusboard import StatusBoard
from tests.conftest import free_port, running_operator
from tests.test_operator import document

SAMPLE = re.compile(r"^(?P<series>[a-z_]+(\{[^}]*\})?) (?P<value>\S+)$")
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


def scrape(port: int) -> dict[str, float]:
    """Every sample of `GET /metrics`, by series (name and labels as written)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample of the text format: {line!r}"
        samples[match["series"]] = float(match["value"])
    return samples


def jobs(samples: dict[str, float]) -> dict[str, float]:
    return {p: samples[f'kubeflower_jobs{{phase="{p}"}}'] for p in PHASES}


def of_job(metric: str, ns: str, name: str, **labels: str) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return f'{metric}{{namespace="{ns}",job="{name}"{extra}}}'


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(Path(__file__).resolve().parents[1] / "crds"), "--validate=false")
        yield server


def test_metrics_count_a_jobs_phases_reconciles_polls_and_api_errors(kube: KubeServer, tmp_path: Path) -> None:
    cluster = Cluster.new_namespace(kube, "metrics", tmp_path)
    ns, name, port = cluster.ns, "fl", free_port()
    # A Service of the job's name made by someone else (not the operator's labels, so its indexes do
    # not see it): the operator's create of it is refused (409), and the job waits (ChildRefused)
    # until that Service is gone.
    service = builders.server_service(parse_job(job(name, namespace=ns)))
    del service["metadata"]["labels"]
    kube.create(service)
    with (
        StatusBoard() as board,
        running_operator(kube, KUBEFLOWER_STATUS_URL=board.url_template, KUBEFLOWER_METRICS_PORT=str(port)),
    ):
        cluster.apply(job(name, runPolicy={"ttlSecondsAfterFinished": 2}))
        cluster.wait_status(name, lambda s: s.get("phase") == "Pending")
        m = wait_for(lambda: (m := scrape(port)) and jobs(m)["Pending"] == 1 and m, 20, "one Pending job")
        assert jobs(m) == {"Pending": 1, "Running": 0, "Succeeded": 0, "Failed": 0, "Suspended": 0}
        assert m[of_job("kubeflower_reconciles_total", ns, name, trigger="create")] == 1
        assert m['kubeflower_api_errors_total{verb="create",kind="Service",code="409"}'] >= 1
        assert of_job("kubeflower_status_polls_total", ns, name) not in m, "no poll before the server is ready"
        kube.delete("v1", "services", ns, service["metadata"]["name"])
        wait_for(lambda: cluster.children(name)["Service"], 20, "the job's own Service")

        cluster.server_ready(name)  # ready, but its status endpoint answers 503: failed polls
        wait_for(lambda: board.failures >= 2, 20, "two failed polls")
        board.post(ns, name, document(0))
        wait_for(lambda: cluster.children(name)["StatefulSet"], 20, "client StatefulSet")
        cluster.clients_ready(name, 2)
        cluster.wait_status(name, lambda s: s.get("phase") == "Running")
        wait_for(lambda: jobs(scrape(port))["Running"] == 1, 20, "one Running job")

        cluster.kubectl("patch", "ftj", name, "--type=merge", "-p", json.dumps({"spec": {"clients": {"replicas": 3}}}))
        wait_for(
            lambda: scrape(port).get(of_job("kubeflower_reconciles_total", ns, name, trigger="update")) == 1,
            20,
            "the update's reconcile",
        )
        board.post(ns, name, document(1))
        cluster.wait_status(name, lambda s: s.get("round") == "1/3")
        after_round_1 = set(scrape(port))

        board.post(ns, name, document(3, Phase.SUCCEEDED))
        cluster.wait_status(name, lambda s: s.get("phase") == "Succeeded")
        m = wait_for(lambda: (m := scrape(port)) and jobs(m)["Succeeded"] == 1 and m, 20, "one Succeeded job")
        # Polls stop once the job is finished: the board's own counts are final, and must match.
        assert m[of_job("kubeflower_status_polls_total", ns, name)] == board.reads
        assert m[of_job("kubeflower_status_poll_failures_total", ns, name)] == board.failures >= 2
        assert m[of_job("kubeflower_reconciles_total", ns, name, trigger="create")] == 1
        assert m[of_job("kubeflower_reconciles_total", ns, name, trigger="update")] == 1
        reconciles = sum(v for k, v in m.items() if k.startswith("kubeflower_reconciles_total{"))
        assert m["kubeflower_reconcile_duration_seconds_count"] == reconciles >= board.reads
        assert m['kubeflower_reconcile_duration_seconds_bucket{le="+Inf"}'] == reconciles
        assert of_job("kubeflower_reconcile_failures_total", ns, name) not in m
        # Rounds add no series: three rounds later the same series exist as after the first.
        assert set(m) == after_round_1

        wait_for(lambda: cluster.job(name) is None, 20, "job deleted after ttlSecondsAfterFinished")
        m = wait_for(
            lambda: (m := scrape(port)) and not any(f'job="{name}"' in k for k in m) and m,
            20,
            "the job's series removed with it",
        )
        assert jobs(m) == dict.fromkeys(PHASES, 0)
    assert Settings().metrics_port == 9090


def test_the_text_format_escapes_labels_and_a_deleted_job_takes_its_series() -> None:
    from kubeflower_operator.metrics import Metrics

    m, odd = Metrics(), ("ns", 'a"b\\c')
    m.job_seen(odd, None)
    m.reconciled(odd, "timer", 0.02, failed=True)
    m.polled(odd, failed=True)
    m.api_error("patch", "StatefulSet", 500)
    text = m.render()
    assert 'kubeflower_jobs{phase="Pending"} 1' in text, "no phase yet counts as Pending"
    assert 'kubeflower_reconciles_total{namespace="ns",job="a\\"b\\\\c",trigger="timer"} 1' in text
    assert 'kubeflower_reconcile_failures_total{namespace="ns",job="a\\"b\\\\c"} 1' in text
    assert 'kubeflower_reconcile_duration_seconds_bucket{le="0.01"} 0' in text
    assert 'kubeflower_reconcile_duration_seconds_bucket{le="0.025"} 1' in text
    assert 'kubeflower_api_errors_total{verb="patch",kind="StatefulSet",code="500"} 1' in text
    m.job_gone(odd)
    after = m.render()
    assert 'a\\"b' not in after and 'kubeflower_jobs{phase="Pending"} 0' in after
    assert 'code="500"} 1' in after, "API errors are not a job's series"
