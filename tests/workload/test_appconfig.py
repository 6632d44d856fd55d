"""The built-in app's run config: its declared defaults, the keys jobs send, and bad values."""

from __future__ import annotations

import io
import tomllib
import zipfile
from typing import Any

import pytest

from kubeflower.core.api import FederatedTrainingJob
from kubeflower.core.runconfig import run_config
from kubeflower_workload import strategies
from kubeflower_workload.appconfig import RunConfigError, TaskConfig
from kubeflower_workload.control import build_fab
from kubeflower_workload.server import BUILTIN_APP
from testbed.jobs import job

DEFAULTS: dict[str, Any] = tomllib.loads((BUILTIN_APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

# Every strategy parameter set once, on a strategy that takes it.
SPECS = [
    {"strategy": {"name": "FedProx", "proximalMu": 0.1}},
    {"strategy": {"name": "FedAvgM", "serverLearningRate": 0.5, "serverMomentum": 0.9}},
    {"strategy": {"name": "FedAdam", "eta": 0.1, "etaL": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.001}},
    {"strategy": {"name": "FedTrimmedAvg", "beta": 0.2}},
    {"strategy": {"name": "MultiKrum", "numMaliciousClients": 1, "numClientsToKeep": 2}, "clients": {"replicas": 5}},
    {"task": {"dataset": "cifar10", "model": "resnet18", "partitioning": {"type": "dirichlet", "alpha": 1}}},
]


def _types(config: dict[str, Any]) -> dict[str, type]:
    return {key: type(value) for key, value in config.items()}


@pytest.mark.parametrize("spec", SPECS)
def test_every_key_a_job_sends_is_declared_with_its_type(spec: dict[str, Any]) -> None:
    sent = run_config(FederatedTrainingJob.model_validate(job(**spec)).spec)
    assert set(sent) <= set(DEFAULTS)
    assert {k: t for k, t in _types(sent).items()} == {k: _types(DEFAULTS)[k] for k in sent}


def test_the_defaults_declare_only_what_jobs_send() -> None:
    sent: set[str] = set()
    for spec in SPECS:
        sent |= set(run_config(FederatedTrainingJob.model_validate(job(**spec)).spec))
    assert set(DEFAULTS) == sent
    assert set(strategies.PARAMETERS) <= set(DEFAULTS)


def test_the_defaults_parse() -> None:
    task = TaskConfig.from_run_config(DEFAULTS)
    assert (task.model, task.dataset, task.fused_train_evaluate) == ("digits-cnn", "digits", True)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("local-epochs", "two", "'local-epochs' must be int"),
        ("local-epochs", 0, "'local-epochs' must be at least 1"),
        ("learning-rate", True, "'learning-rate' must be float"),
        ("partitioning", "shards", "iid or dirichlet"),
        ("model", "mnist-cnn", "model mnist-cnn takes 1x28x28 inputs but dataset digits has 1x8x8"),
        ("dataset", "imagenet", "unknown dataset 'imagenet'"),
    ],
)
def test_bad_values_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskConfig.from_run_config({**DEFAULTS, key: value})


def test_a_missing_key_is_named() -> None:
    config = dict(DEFAULTS)
    del config["seed"]
    with pytest.raises(RunConfigError, match="no 'seed'"):
        TaskConfig.from_run_config(config)


def test_the_app_bundle_holds_only_the_app() -> None:
    names = zipfile.ZipFile(io.BytesIO(build_fab(BUILTIN_APP))).namelist()
    assert "pyproject.toml" in names and "kubeflower_app/client_app.py" in names
    assert not [n for n in names if "__pycache__" in n]
