"""A Flower App of one's own through `kubeflower run` (tests/workload/ownapp.py, written the way
Flower's templates write one): its metrics under their names, its centralized evaluation, its log
and traceback, its rounds, its failures, its saved model, and what a hostile app cannot do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kubeflower.core.server_status import METRICS_LIMIT, Phase, ServerStatus
from tests.test_local_report import colored_pixels
from tests.workload.conftest import write_job
from tests.workload.ownapp import write_own_app

pytestmark = pytest.mark.slow


def run_own_app(tmp_path: Path, kubeflower_run: Any, mode: str = "ok", **app: Any) -> tuple[Any, ServerStatus, Path]:
    """`kubeflower run` of the app in `mode`, 2 rounds (the app's own default is 5)."""
    job_file = write_job(
        tmp_path,
        f"own-{mode}",
        task=None,
        image="me/app:1",
        rounds=2,
        app={"path": "ownapp", "runConfig": {"mode": mode}, **app},
    )
    output = tmp_path / "out"
    result = kubeflower_run(job_file, output)
    return result, ServerStatus.model_validate_json((output / "metrics.json").read_text()), output


def test_an_own_apps_metrics_log_rounds_and_model(tmp_path: Path, kubeflower_run: Any) -> None:
    write_own_app(tmp_path)
    result, status, output = run_own_app(tmp_path, kubeflower_run)
    assert result.returncode == 0, result.stdout + result.stderr
    # spec.rounds reached the app (its default is 5), and the total was right from the first line.
    assert (status.current_round, status.total_rounds) == (2, 2)
    progress = re.findall(r"round (\d+)/(\d+)", result.stdout)
    assert progress[0] == ("0", "2") and {total for _, total in progress} == {"2"}, result.stdout
    # Every metric under its own name: training, the clients' evaluation, the centralized one.
    assert [sorted(r.train_metrics) for r in status.history] == [["train_loss"]] * 2
    assert [sorted(r.metrics) for r in status.history] == [["eval_acc", "eval_loss"]] * 2
    assert [r.server_metrics for r in status.history] == [
        {"accuracy": pytest.approx(0.1), "loss": pytest.approx(1 / 11)},
        {"accuracy": pytest.approx(0.2), "loss": pytest.approx(1 / 21)},
    ]
    assert "eval_acc 0.1000" in result.stdout  # the progress line's accuracy, by the default names
    table = result.stdout[result.stdout.index("Succeeded: 2/2 rounds") :]
    for heading in ("train_loss", "eval_loss", "eval_acc", "server accuracy", "server loss"):
        assert f" {heading} " in table, table
    assert colored_pixels(output / "metrics.png") > 2000  # curves, not just axes
    # The ServerApp's own log in the server's; its model saved in its working directory.
    server_log = (output / "logs" / "server.log").read_text()
    assert "ownapp: starting, mode ok" in server_log and "[ROUND 2/2]" in server_log
    assert "ownapp: model saved" in server_log
    assert (output / "app" / "final_model.npy").is_file()
    assert "app/final_model.npy" in result.stdout


def test_an_app_without_the_rounds_key_fails_with_the_reason(tmp_path: Path, kubeflower_run: Any) -> None:
    write_own_app(tmp_path, rounds_key="rounds")
    result, status, _ = run_own_app(tmp_path, kubeflower_run)
    assert result.returncode == 1
    assert status.phase == Phase.FAILED and status.current_round == 0
    assert "does not declare 'num-server-rounds' in [tool.flwr.app.config]" in status.message
    assert "spec.app.roundsKey" in status.message and "spec.app.roundsKey" in result.stdout


def test_a_failing_client_app_fails_the_job_with_the_clients_error(tmp_path: Path, kubeflower_run: Any) -> None:
    write_own_app(tmp_path)
    result, status, _ = run_own_app(tmp_path, kubeflower_run, "fail-client")
    assert result.returncode == 1
    reason = "round 1: all 2 clients failed: RuntimeError: no training data [partition 0] in /data"
    assert status.phase == Phase.FAILED and status.message == reason
    assert f"job failed: {reason}" in result.stdout  # the brackets printed, not taken for markup


def test_a_failing_server_app_leaves_its_traceback_and_a_plain_message(tmp_path: Path, kubeflower_run: Any) -> None:
    write_own_app(tmp_path)
    result, status, output = run_own_app(tmp_path, kubeflower_run, "fail-server")
    assert result.returncode == 1
    error = "model [resnet] wants input [3, 32, 32]; got [1, 8, 8]"
    assert status.message == f"ServerApp failed with exception: {error}"
    assert f"job failed: ServerApp failed with exception: {error}" in result.stdout
    server_log = (output / "logs" / "server.log").read_text()
    assert "Traceback (most recent call last):" in server_log and f"ValueError: {error}" in server_log


def test_a_hostile_app_leaves_the_status_bounded(tmp_path: Path, kubeflower_run: Any) -> None:
    """Forged progress lines, ten thousand metrics a round, a 3 MB line: the status stays small. Its
    rounds key is its own (spec.app.roundsKey)."""
    write_own_app(tmp_path, rounds_key="rounds")
    result, status, output = run_own_app(tmp_path, kubeflower_run, "hostile", roundsKey="rounds")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(r.round, r.replies) for r in status.history] == [(1, 2), (2, 2)]  # no forged round 999999
    assert all(len(r.train_metrics) == METRICS_LIMIT and "train_loss" in r.train_metrics for r in status.history)
    assert (output / "metrics.json").stat().st_size < 10_000
    assert "more metrics in metrics.json" in result.stdout
