"""The server entry point's HTTP endpoints, over a real socket."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus
from kubeflower_operator import poll as polling
from kubeflower_workload import status_server

STATUS = ServerStatus(phase=Phase.RUNNING, total_rounds=3, clients=ClientCounts(connected=2, expected=2)).with_round(
    RoundRecord(round=1, metrics={"loss": 0.5, "accuracy": 0.75})
)


def test_prometheus_text() -> None:
    text = status_server.prometheus_text(STATUS, 'my"job')
    assert 'kubeflower_round{job="my\\"job"} 1' in text
    assert 'kubeflower_rounds{job="my\\"job"} 3' in text
    assert 'kubeflower_clients_connected{job="my\\"job"} 2' in text
    assert 'kubeflower_accuracy{job="my\\"job"} 0.75' in text
    assert 'kubeflower_run_phase{job="my\\"job",phase="Running"} 1' in text
    assert 'kubeflower_run_phase{job="my\\"job",phase="Failed"} 0' in text
    assert "# TYPE kubeflower_loss gauge" in text
    assert "kubeflower_loss" not in status_server.prometheus_text(ServerStatus(), "j")
    own = ServerStatus().with_round(RoundRecord(round=1, metrics={"eval_acc": 0.5}, server_metrics={'a"b': 0.25}))
    text = status_server.prometheus_text(own, "j")
    assert 'kubeflower_metric{job="j",kind="evaluate",name="eval_acc"} 0.5' in text
    assert 'kubeflower_metric{job="j",kind="server",name="a\\"b"} 0.25' in text


def test_endpoints() -> None:
    healthy = {"value": False}
    server = status_server.serve(0, lambda: STATUS, lambda: healthy["value"], "job", host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/status") as response:
            assert ServerStatus.model_validate_json(response.read()) == STATUS
        with urllib.request.urlopen(f"{base}/metrics") as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'kubeflower_round{job="job"} 1' in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/healthz")
        assert not_ready.value.code == 503
        healthy["value"] = True
        with urllib.request.urlopen(f"{base}/healthz") as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope")
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_stop_obeys_only_the_jobs_token() -> None:
    """POST /stop with the job's UID ends the run (the operator failed the job); nothing else does."""
    stopped: list[bool] = []
    stop = status_server.Stop("job-uid-1", lambda: stopped.append(True))
    server = status_server.serve(0, lambda: STATUS, lambda: True, "job", host="127.0.0.1", stop=stop)
    plain = status_server.serve(0, lambda: STATUS, lambda: True, "job", host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stop"
        assert polling.stop(url, "someone-else", 2) == 403 and stopped == []
        assert polling.stop(url, "", 2) == 403 and stopped == []
        assert polling.stop(url, "job-uid-1", 2) == 202 and stopped == [True]
        assert polling.stop(f"http://127.0.0.1:{plain.server_address[1]}/stop", "job-uid-1", 2) == 404
    finally:
        for s in (server, plain):
            s.shutdown()
            s.server_close()
