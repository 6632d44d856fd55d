"""A checkpoint per round and the resume from it: the same final model as a run never stopped.

The rounds are the built-in ServerApp's own (`federation.federate`, `federation.resume`) and the
clients' work is the built-in ClientApp's (`task.train`, `task.evaluate`, real training on digits);
only the network between them is left out: `InProcessGrid` hands each message to the ClientApp
function in this process, as a SuperNode would in its own.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from kubeflower.core import contract
from kubeflower.core.runconfig import run_config
from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus
from kubeflower.core.validation import parse_job
from kubeflower_workload import BUILTIN_APP, checkpoints, federation, models, server, strategies, task
from kubeflower_workload.appconfig import TaskConfig
from testbed.jobs import job

ROUNDS = 3
STOP_AFTER = 2


class Stopped(Exception):
    """The server 'dies' here, right after a checkpoint."""


class InProcessGrid:
    """A Grid whose nodes are the built-in ClientApp's functions, called in this process."""

    def __init__(self, config: dict[str, Any], nodes: int = 2) -> None:
        self.config, self.nodes = config, nodes
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id  # what the SuperLink assigns
            node = message.metadata.dst_node_id
            context = Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": node - 1, "num-partitions": self.nodes},
                state=RecordDict(),
                run_config=self.config,
            )
            handler = task.train if message.metadata.message_type == "train" else task.evaluate
            self.replies[message.object_id] = handler(message, context)
            ids.append(message.object_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


def config_for(strategy: dict[str, Any], fused: bool) -> dict[str, Any]:
    defaults = tomllib.loads((BUILTIN_APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    spec = parse_job(job(rounds=ROUNDS, strategy=strategy, task={"dataset": "digits", "fusedTrainEvaluate": fused}))
    return {**defaults, **run_config(spec.spec)}


def run(config: dict[str, Any], folder: Path, stop_after: int | None = None) -> tuple[ArrayRecord, list[RoundRecord]]:
    """The ServerApp's rounds with a checkpoint each; `stop_after`: die after that round's checkpoint."""
    strategy = strategies.build(config)
    torch.manual_seed(int(config["seed"]))
    keeper = checkpoints.Keeper(folder, "uid-1", strategy)
    model = models.build(TaskConfig.from_run_config(config).model)
    start = federation.resume(keeper, federation.Start(ArrayRecord(model.state_dict())))

    def on_checkpoint(server_round: int, arrays: ArrayRecord, pending: RoundRecord | None) -> None:
        keeper.save(server_round, arrays, pending)
        if server_round == stop_after:
            raise Stopped

    arrays = federation.federate(
        InProcessGrid(config),  # type: ignore[arg-type]
        strategy,
        start,
        ROUNDS,
        fused=bool(config["fused-train-evaluate"]),
        on_round=keeper.reported,
        on_checkpoint=on_checkpoint,
    )
    return arrays, keeper.history


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(tmp_path / "data"))


@pytest.mark.parametrize(
    ("strategy", "fused"),
    [
        ({"name": "FedAdam", "eta": 0.05, "etaL": 0.05, "tau": 0.01}, True),
        ({"name": "FedAvgM", "serverMomentum": 0.9, "serverLearningRate": 1.0}, False),
    ],
    ids=["FedAdam-fused", "FedAvgM"],
)
def test_a_run_resumed_from_its_checkpoint_ends_with_the_model_of_a_run_never_stopped(
    tmp_path: Path, strategy: dict[str, Any], fused: bool
) -> None:
    config = config_for(strategy, fused)
    straight, straight_history = run(config, tmp_path / "straight")

    with pytest.raises(Stopped):
        run(config, tmp_path / "resumed", stop_after=STOP_AFTER)
    found = checkpoints.latest(tmp_path / "resumed", "uid-1")
    assert found is not None and found.round == STOP_AFTER
    resumed, resumed_history = run(config, tmp_path / "resumed")

    for a, b in zip(straight.to_numpy_ndarrays(), resumed.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [r.round for r in resumed_history] == list(range(1, ROUNDS + 1))
    for ours, theirs in zip(resumed_history, straight_history, strict=True):
        assert ours.metrics == pytest.approx(theirs.metrics)


def test_the_strategy_state_is_what_makes_the_resume_exact(tmp_path: Path) -> None:
    """Without FedAdam's moments the resumed model differs: the test above would see a lost state."""
    config = config_for({"name": "FedAdam", "eta": 0.05, "etaL": 0.05, "tau": 0.01}, False)
    straight, _ = run(config, tmp_path / "straight")
    with pytest.raises(Stopped):
        run(config, tmp_path / "resumed", stop_after=STOP_AFTER)
    found = checkpoints.latest(tmp_path / "resumed", "uid-1")
    assert found is not None
    payload = torch.load(found.tensors, weights_only=True)
    assert set(payload["strategy"]) >= {"m_t", "v_t"}
    payload["strategy"] = {}
    torch.save(payload, found.tensors)
    resumed, _ = run(config, tmp_path / "resumed")
    assert any(
        not np.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(straight.to_numpy_ndarrays(), resumed.to_numpy_ndarrays(), strict=True)
    )


def test_checkpoints_are_kept_few_and_another_jobs_are_never_resumed(tmp_path: Path) -> None:
    config = config_for({"name": "FedAvg"}, True)
    run(config, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    kept = range(ROUNDS - checkpoints.KEEP + 1, ROUNDS + 1)
    assert names == sorted(f"round-{r:06d}{s}" for r in kept for s in (".json", ".pt"))
    assert checkpoints.latest(tmp_path, "uid-1") is not None
    assert checkpoints.latest(tmp_path, "another-job") is None
    # A checkpoint whose model file is missing (a write cut short) is passed over for the one before.
    (tmp_path / f"round-{ROUNDS:06d}.pt").unlink()
    found = checkpoints.latest(tmp_path, "uid-1")
    assert found is not None and found.round == ROUNDS - 1


def _settings(tmp_path: Path, uid: str = "uid-1") -> server.Settings:
    env = {
        contract.ENV_JOB_NAME: "job",
        contract.ENV_RUN_CONFIG: '{"num-server-rounds": 3, "min-available-clients": 2}',
        contract.ENV_SUPERLINK_PORT: "9092",
        contract.ENV_SUPERLINK_LOOPBACK_PORT: str(contract.SUPERLINK_LOOPBACK_PORT),
        contract.ENV_SECURITY: contract.SECURITY_DISABLED,  # no keys here: what is read at start is the same
        contract.ENV_STATUS_PORT: "8080",
        contract.ENV_OUTPUT_DIR: str(tmp_path / "out"),
        contract.ENV_JOB_UID: uid,
        contract.ENV_FINAL_STATUS: str(tmp_path / "final" / contract.FINAL_STATUS_KEY),
    }
    return server.Settings.from_env(env)


def test_a_starting_server_resumes_its_jobs_rounds_or_serves_its_final_state(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert server.initial_status(settings, "now").phase == Phase.PENDING  # nothing there: a fresh start
    config = config_for({"name": "FedAvg"}, True)
    with pytest.raises(Stopped):
        run(config, contract.OutputFolder(settings.output_dir).checkpoints, stop_after=2)
    resumed = server.initial_status(settings, "now")
    assert resumed.resumed_round == 2 and resumed.current_round == 1  # round 2 awaits its evaluation
    assert [r.round for r in resumed.history] == [1] and "resuming after round 2" in resumed.message
    assert server.initial_status(_settings(tmp_path, "another-job"), "now").resumed_round is None

    # The operator's final status (no output volume): served, if it is this job's.
    final = ServerStatus(phase=Phase.SUCCEEDED, current_round=3, total_rounds=3, job_uid="uid-1")
    assert settings.final_status is not None
    settings.final_status.parent.mkdir()
    settings.final_status.write_text(final.to_json())
    assert server.initial_status(settings, "now").phase == Phase.SUCCEEDED
    assert server.initial_status(_settings(tmp_path, "another-job"), "now").phase == Phase.PENDING
    # metrics.json of this job, finished, wins (it has every round); a running one is not final.
    metrics = contract.OutputFolder(settings.output_dir).metrics
    metrics.write_text(final.model_copy(update={"history": [RoundRecord(round=r) for r in (1, 2, 3)]}).to_json())
    assert len(server.initial_status(settings, "now").history) == 3
    settings.final_status.unlink()
    metrics.write_text(final.model_copy(update={"phase": Phase.RUNNING}).to_json())
    assert server.initial_status(settings, "now").resumed_round == 2
