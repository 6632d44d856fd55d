"""Real federations on loopback: SuperLink, SuperNodes and Flower App processes, as the pods run them.

The demo job runs once through `kubeflower run` (fused rounds, the default); the same job then
runs with the server entry point driven directly, without fused rounds, while the test reads its
/status and /metrics; both must give the same numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kubeflower.core import contract
from kubeflower.core.server_status import Phase, ServerStatus
from kubeflower.core.validation import load_job
from kubeflower.local import host_cpu_share, local_commands
from kubeflower_workload import models, processes
from tests.workload.conftest import KUBEFLOWER, MARKER, REPO, processes_with, write_job

pytestmark = pytest.mark.slow
DEMO = REPO / "examples" / "digits-fedavg.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """`kubeflower run examples/digits-fedavg.yaml`, once for the module."""
    output = tmp_path_factory.mktemp("demo")
    marker = uuid.uuid4().hex
    result = subprocess.run(
        [KUBEFLOWER, "run", str(DEMO), "--output", str(output)],
        check=False,
        env={**os.environ, MARKER: marker},
        capture_output=True,
        text=True,
        timeout=300,
    )
    yield result, output
    assert processes_with(marker) == []


def test_the_demo_job_trains_and_writes_its_results(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, output = demo
    assert result.returncode == 0, result.stdout + result.stderr
    status = ServerStatus.model_validate_json((output / "metrics.json").read_text())
    assert status.phase == Phase.SUCCEEDED and status.current_round == 3
    assert [r.round for r in status.history] == [1, 2, 3]
    assert status.metrics["accuracy"] >= 0.80
    assert (output / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = models.build("digits-cnn")
    model.load_state_dict(torch.load(output / "final_model.pt"))
    assert "Succeeded: 3/3 rounds" in result.stdout and "accuracy" in result.stdout


def _superexec_env(root: int, key: str, name: bytes = b"flower-superexec") -> set[str | None]:
    """The variable `key` of each process named `name` below process `root` (by default Flower's
    SuperExecs: their apps inherit it)."""
    values: set[str | None] = set()
    for pid in processes.descendants(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if name in command:
            env = dict(item.decode().split("=", 1) for item in environ.split(b"\0") if b"=" in item)
            values.add(env.get(key))
    return values


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_server_status_and_metrics_during_and_after_a_run(
    demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path, marker: str
) -> None:
    """The server entry point, with `fusedTrainEvaluate: false`: /status and /metrics follow the run;
    the numbers are the fused demo's."""
    job = load_job(DEMO)
    assert job.spec.task is not None and job.spec.task.fused_train_evaluate
    job.spec.task.fused_train_evaluate = False
    members = local_commands(job, DEMO.parent, tmp_path / "out", tmp_path / "home")
    assert json.loads(members[0][2][contract.ENV_RUN_CONFIG])["fused-train-evaluate"] is False
    base = f"http://127.0.0.1:{members[0][2][contract.ENV_STATUS_PORT]}"
    started = [
        processes.start(command, processes.child_env(env | {MARKER: marker}), tmp_path / f"{name}.log")
        for name, command, env in members
    ]
    try:
        seen: list[ServerStatus] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                status = ServerStatus.model_validate_json(_get(f"{base}/status"))
            except OSError:
                time.sleep(0.5)
                continue
            seen.append(status)
            if status.phase == Phase.RUNNING and 1 <= status.current_round < 3:  # the run cannot end meanwhile
                metrics = _get(f"{base}/metrics")
                assert any(
                    f'kubeflower_round{{job="digits-fedavg"}} {r}' in metrics
                    for r in (status.current_round, status.current_round + 1)
                )
                assert 'kubeflower_run_phase{job="digits-fedavg",phase="Running"} 1' in metrics
                assert status.metrics == status.history[-1].metrics
                # Flower's SuperExec at the server (its task poll: Flower's 1 s); none beside the
                # SuperNodes: their fork servers take its role (warm ClientApps, the default).
                # The clients' torch threads: their share of this host's CPUs, in the process
                # whose children run the ClientApps.
                poll, threads = os.environ.get(processes.SUPEREXEC_POLL), str(host_cpu_share(2))
                assert [_superexec_env(p.pid, processes.SUPEREXEC_POLL) for p in started] == [{poll}, set(), set()]
                assert _superexec_env(started[0].pid, contract.ENV_THREADS) == {os.environ.get(contract.ENV_THREADS)}
                for client in started[1:]:
                    assert _superexec_env(client.pid, contract.ENV_THREADS, b"--runtime-api-address") == {threads}
            if status.phase.finished:
                break
            time.sleep(0.5)
        final = seen[-1]
        assert final.phase == Phase.SUCCEEDED, final.message
        assert any(s.phase == Phase.RUNNING and 0 < s.current_round < 3 for s in seen), "no status seen mid-run"
        assert final.clients.connected == 2 and final.finish_time is not None
        assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == json.loads(final.to_json())
        time.sleep(1)  # the final state keeps being served
        assert ServerStatus.model_validate_json(_get(f"{base}/status")) == final
        metrics = _get(f"{base}/metrics")
        assert 'kubeflower_round{job="digits-fedavg"} 3' in metrics
        assert 'kubeflower_run_phase{job="digits-fedavg",phase="Succeeded"} 1' in metrics
        assert f'kubeflower_accuracy{{job="digits-fedavg"}} {final.metrics["accuracy"]:g}' in metrics
        assert _get(f"{base}/healthz") == "ok\n"
        fused = ServerStatus.model_validate_json((demo[1] / "metrics.json").read_text())
        for unfused_round, fused_round in zip(final.history, fused.history, strict=True):
            assert unfused_round.metrics == pytest.approx(fused_round.metrics, abs=1e-4)
    finally:
        for process in started:
            processes.stop(process, grace=15)
    assert [process.returncode for process in started] == [0, 0, 0]  # entry points exit cleanly on SIGTERM


USER_APP_SERVER = """
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
import numpy as np

app = ServerApp()

@app.main()
def main(grid: Grid, context: Context) -> None:
    if context.run_config["fail"]:
        raise RuntimeError("the app broke")
    strategy = FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(3)]),
                   num_rounds=int(context.run_config["num-server-rounds"]))
"""
USER_APP_CLIENT = """
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    step = float(context.run_config["step"])
    metrics = MetricRecord({"num-examples": 10, "loss": 1.0 / (1.0 + arrays[0][0])})
    return Message(RecordDict({"arrays": ArrayRecord([arrays[0] + step]), "metrics": metrics}), reply_to=msg)

@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    value = float(msg.content["arrays"].to_numpy_ndarrays()[0][0])
    metrics = MetricRecord({"num-examples": 10, "loss": 1.0 / (1.0 + value), "accuracy": value / 10})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
"""


def write_user_app(folder: Path) -> Path:
    """A minimal Flower App project, as a user would bake it into an image."""
    app = folder / "myapp"
    (app / "myapp").mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "myapp"\nversion = "1.0.0"\ndependencies = []\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n'
        '[tool.flwr.app]\npublisher = "me"\n'
        '[tool.flwr.app.components]\nserverapp = "myapp.server_app:app"\nclientapp = "myapp.client_app:app"\n'
        "[tool.flwr.app.config]\nnum-server-rounds = 2\nstep = 1.0\nfail = false\n"
    )
    (app / "myapp" / "__init__.py").write_text("")
    (app / "myapp" / "server_app.py").write_text(USER_APP_SERVER)
    (app / "myapp" / "client_app.py").write_text(USER_APP_CLIENT)
    return app


def test_a_users_own_app_runs_unchanged_with_its_progress(tmp_path: Path, kubeflower_run: Any) -> None:
    write_user_app(tmp_path)
    job_file = write_job(
        tmp_path, "my-app", task=None, app={"path": "myapp", "runConfig": {"step": 2.0}}, image="me/app:1", rounds=3
    )
    result = kubeflower_run(job_file, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    status = ServerStatus.model_validate_json((tmp_path / "out" / "metrics.json").read_text())
    # spec.rounds (3) reached the app as num-server-rounds, over its own default (2).
    assert (status.current_round, status.total_rounds) == (3, 3)
    assert [r.metrics["accuracy"] for r in status.history] == pytest.approx([0.2, 0.4, 0.6])  # step 2.0 too
    assert status.history[0].train_metrics == {"loss": pytest.approx(1.0)}
    assert status.history[1].replies == 2


def test_a_run_config_key_the_app_does_not_declare_fails_the_job_naming_it(tmp_path: Path, kubeflower_run: Any) -> None:
    write_user_app(tmp_path)
    job_file = write_job(
        tmp_path, "bad-config", task=None, app={"path": "myapp", "runConfig": {"stpe": 2.0}}, image="me/app:1"
    )
    result = kubeflower_run(job_file, tmp_path / "out")
    assert result.returncode == 1
    assert "does not declare 'stpe' in [tool.flwr.app.config] of its pyproject.toml" in result.stdout
    status = ServerStatus.model_validate_json((tmp_path / "out" / "metrics.json").read_text())
    assert status.phase == Phase.FAILED and "stpe" in status.message


def test_an_exception_in_the_app_fails_the_job_with_flowers_message(tmp_path: Path, kubeflower_run: Any) -> None:
    write_user_app(tmp_path)
    job_file = write_job(
        tmp_path, "failing", task=None, app={"path": "myapp", "runConfig": {"fail": True}}, image="me/app:1"
    )
    result = kubeflower_run(job_file, tmp_path / "out")
    assert result.returncode == 1
    assert "ServerApp failed with exception: the app broke" in result.stdout


def test_a_data_set_that_cannot_be_had_fails_the_job_naming_it(
    tmp_path: Path, kubeflower_run: Any, run_env: dict[str, str]
) -> None:
    # Offline for sure: downloads go to a proxy port where nothing listens.
    run_env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    job_file = write_job(tmp_path, "no-mnist", task={"dataset": "mnist"})
    result = kubeflower_run(job_file, tmp_path / "out")
    assert result.returncode == 1
    assert f"dataset mnist is not in the data folder {run_env['KUBEFLOWER_DATA_DIR']}" in result.stdout, result.stdout


def _start_training(tmp_path: Path, run_env: dict[str, str], marker: str) -> subprocess.Popen[str]:
    """`kubeflower run` of a long job, returned once its clients are training."""
    job_file = write_job(tmp_path, "long-job", rounds=50)
    run = subprocess.Popen(
        [KUBEFLOWER, "run", str(job_file), "--output", str(tmp_path / "out")],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any("flwr-clientapp" in command for command in processes_with(marker)):
        assert time.monotonic() < deadline and run.poll() is None, "the federation never got to training"
        time.sleep(0.2)
    return run


def test_ctrl_c_stops_every_process(tmp_path: Path, run_env: dict[str, str], marker: str) -> None:
    run = _start_training(tmp_path, run_env, marker)
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 130, output
    assert "stopped" in output
    assert "stopping run" in (tmp_path / "out" / "logs" / "server.log").read_text()  # the server stopped the run
    assert processes_with(marker) == []


def test_killing_kubeflower_run_leaves_nothing_behind(tmp_path: Path, run_env: dict[str, str], marker: str) -> None:
    """SIGKILL cannot be handled: the children get SIGTERM from the kernel and clean up their trees."""
    run = _start_training(tmp_path, run_env, marker)
    run.kill()
    run.communicate(timeout=10)
    deadline = time.monotonic() + 30
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with(marker) == []


def test_kubeflower_run_resume_after_sigkill_completes_the_same_rounds(
    tmp_path: Path, run_env: dict[str, str], marker: str, kubeflower_run: Any
) -> None:
    """SIGKILL of the whole local run after its second checkpoint; `--resume` continues after the
    checkpoint and ends with every round once; resuming the finished run only reports it."""
    job_file = write_job(tmp_path, "resumed-job", rounds=4)
    output = tmp_path / "out"
    folder = contract.OutputFolder(output)
    run = subprocess.Popen(
        [KUBEFLOWER, "run", str(job_file), "--output", str(output)],
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while not (folder.checkpoints / "round-000002.json").exists():
        assert time.monotonic() < deadline and run.poll() is None, "no checkpoint of round 2"
        time.sleep(0.2)
    run.kill()
    run.wait(timeout=10)
    deadline = time.monotonic() + 30
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not folder.metrics.exists()
    uid = folder.job_uid.read_text().strip()

    resumed = kubeflower_run(job_file, output, 240, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = ServerStatus.model_validate_json(folder.metrics.read_text())
    assert status.phase == Phase.SUCCEEDED and status.job_uid == uid
    assert [r.round for r in status.history] == [1, 2, 3, 4]
    assert status.resumed_round is not None and status.resumed_round >= 2
    assert f"resuming after round {status.resumed_round}" in folder.server_log.read_text()
    assert folder.final_model.exists()

    again = kubeflower_run(job_file, output, 120, "--resume")
    assert again.returncode == 0 and "Succeeded: 4/4 rounds" in again.stdout, again.stdout
    assert "serving its final state, not running again" in folder.server_log.read_text()

    assert kubeflower_run(job_file, tmp_path / "empty", 60, "--resume").returncode == 1
