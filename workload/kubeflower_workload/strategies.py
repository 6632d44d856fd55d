"""Flower's strategies, built from the run config.

The strategies are Flower's own (`flwr.serverapp.strategy`), unchanged; the built-in ServerApp
drives them round by round itself (see `federation`). A strategy parameter the job leaves out is
UNSET in the run config, so the strategy keeps its own default (FedYogi's eta is not FedAdam's).
Which strategies exist and which parameters each takes is `kubeflower.core.vocabulary`'s table.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from flwr.serverapp import strategy as flower_strategies
from flwr.serverapp.strategy import FedAvg

from kubeflower.core.vocabulary import STRATEGY_PARAMETERS, StrategyName, run_config_key
from kubeflower_workload.appconfig import UNSET, RunConfigError, get

STRATEGIES: dict[str, type[FedAvg]] = {name.value: getattr(flower_strategies, name.value) for name in StrategyName}
PARAMETERS: dict[str, tuple[str, type]] = {
    run_config_key(name): (parameter.flower_argument, parameter.kind) for name, parameter in STRATEGY_PARAMETERS.items()
}
"""Run-config key of each strategy parameter -> the Flower constructor argument and its type."""


def build(config: Mapping[str, Any]) -> FedAvg:
    """The strategy named by `strategy`, with sampling and its own parameters from the run config."""
    name = get(config, "strategy", str)
    if name not in STRATEGIES:
        raise RunConfigError(f"run config 'strategy' must be one of {', '.join(STRATEGIES)} (got {name!r})")
    cls = STRATEGIES[name]
    fraction_evaluate = get(config, "fraction-evaluate", float)
    kwargs: dict[str, Any] = {
        "fraction_train": get(config, "fraction-train", float),
        "fraction_evaluate": fraction_evaluate,
        # At least one client per round; `min_available_nodes` is what a round waits for.
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if fraction_evaluate > 0 else 0,
        "min_available_nodes": get(config, "min-available-clients", int),
    }
    accepted = inspect.signature(cls).parameters
    for key, (argument, kind) in PARAMETERS.items():
        value = get(config, key, kind)
        if value == UNSET:
            continue
        if argument not in accepted:
            raise RunConfigError(f"run config {key!r} does not apply to strategy {name}; leave it out")
        kwargs[argument] = value
    return cls(**kwargs)
