"""The built-in app's run config, read into typed settings with errors a user can act on.

Flower does not type-check run-config overrides against the app's defaults, so a job submitted by
hand with `-c local-epochs='two'` reaches the app as a string: every key is checked here, and a
bad one fails the run with a message naming the key (Flower reports it as the run's failure).
The keys are those of `kubeflower.core.runconfig`, all declared with their defaults
in `flowerapp/pyproject.toml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeflower.core.vocabulary import VocabularyError, resolve_model

UNSET = -1
"""Default of a strategy parameter the job leaves out: the strategy's own default applies."""


class RunConfigError(ValueError):
    """A run-config value of the wrong type or range."""


def get(config: Mapping[str, Any], key: str, kind: type) -> Any:
    """The value of `key` as `kind` (int, float, str or bool); ints are accepted for floats."""
    if key not in config:
        raise RunConfigError(f"run config has no {key!r}; the app's pyproject.toml declares every key with a default")
    value = config[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RunConfigError(f"run config {key!r} must be {kind.__name__} (got {value!r})")
    return value


@dataclass(frozen=True)
class TaskConfig:
    """What the clients train, and how the server drives the rounds."""

    num_rounds: int
    model: str
    """Resolved model name (never `auto`)."""
    dataset: str
    partitioning: str
    dirichlet_alpha: float
    partition_seed: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    test_fraction: float
    seed: int
    fused_train_evaluate: bool

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> TaskConfig:
        dataset = get(config, "dataset", str)
        task = cls(
            num_rounds=get(config, "num-server-rounds", int),
            model=_model(get(config, "model", str), dataset),
            dataset=dataset,
            partitioning=get(config, "partitioning", str),
            dirichlet_alpha=get(config, "dirichlet-alpha", float),
            partition_seed=get(config, "partition-seed", int),
            local_epochs=get(config, "local-epochs", int),
            batch_size=get(config, "batch-size", int),
            learning_rate=get(config, "learning-rate", float),
            test_fraction=get(config, "test-fraction", float),
            seed=get(config, "seed", int),
            fused_train_evaluate=get(config, "fused-train-evaluate", bool),
        )
        for key, value in (
            ("num-server-rounds", task.num_rounds),
            ("local-epochs", task.local_epochs),
            ("batch-size", task.batch_size),
        ):
            if value < 1:
                raise RunConfigError(f"run config {key!r} must be at least 1 (got {value})")
        if task.partitioning not in ("iid", "dirichlet"):
            raise RunConfigError(f"run config 'partitioning' must be iid or dirichlet (got {task.partitioning!r})")
        return task


def _model(model: str, dataset: str) -> str:
    try:
        return resolve_model(model, dataset).value
    except VocabularyError as exc:
        raise RunConfigError(f"run config 'model': {exc}") from None
