"""The Flower run config a job submits: the spec's task and strategy as flat key/values.

Flower run configs are flat (`key = value` with str, int, float or bool values), so nested spec
fields become dotted-free kebab keys. The built-in app's defaults
(`workload/kubeflower_workload/flowerapp/pyproject.toml`)
declare every key below; a test keeps the two in step.
"""

from __future__ import annotations

from kubeflower.core import contract
from kubeflower.core.api import FederatedTrainingJobSpec
from kubeflower.core.vocabulary import run_config_key

RunConfig = dict[str, bool | int | float | str]


def run_config(spec: FederatedTrainingJobSpec) -> RunConfig:
    """The run config for the job: the built-in task's keys, or the user's app overrides; the
    number of rounds in both (the server reads it from here too: it has no other channel), under
    the app's own key for a user's app (spec.app.roundsKey, which it must declare)."""
    if spec.app is not None:
        return {**(spec.app.run_config or {}), spec.app.rounds_key: spec.rounds}
    assert spec.task is not None  # guaranteed by the model's task/app rule
    task, strategy = spec.task, spec.strategy
    config: RunConfig = {
        contract.RUN_CONFIG_ROUNDS: spec.rounds,
        "model": task.model.value,
        "dataset": task.dataset.value,
        "partitioning": task.partitioning.type.value,
        "dirichlet-alpha": task.partitioning.alpha,
        "partition-seed": task.partitioning.seed,
        "local-epochs": task.local_epochs,
        "batch-size": task.batch_size,
        "learning-rate": task.learning_rate,
        "test-fraction": task.test_fraction,
        "seed": task.seed,
        "fused-train-evaluate": task.fused_train_evaluate,
        "strategy": strategy.name.value,
        "fraction-train": strategy.fraction_train,
        "fraction-evaluate": strategy.fraction_evaluate,
        contract.RUN_CONFIG_MIN_CLIENTS: spec.min_available_clients,
    }
    for wire_name, value in strategy.parameters().items():
        config[run_config_key(wire_name)] = value
    return config
