"""Every strategy's aggregation, on fake client replies built as Flower messages; no network.

Each strategy is built by `strategies.build` from a run config, as the ServerApp builds it, so the
tests also prove that the job's parameters reach Flower's strategy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy
from flwr.supercore.task_identity import TaskIdentity

from kubeflower_workload import strategies
from kubeflower_workload.appconfig import UNSET, RunConfigError
from kubeflower_workload.messages import ARRAYS, METRICS, NUM_EXAMPLES

HONEST = [np.array([1.0, 2.0]), np.array([1.2, 1.8]), np.array([0.9, 2.1]), np.array([1.1, 1.9]), np.array([1.0, 2.2])]
OUTLIER = np.array([100.0, -100.0])


class NodeGrid:
    """Only what sampling asks of a Grid: the connected node ids."""

    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages are stamped with the run they belong to, as in a ServerApp process."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def build(name: str, **parameters: Any) -> Strategy:
    config: dict[str, Any] = {
        "strategy": name,
        "fraction-train": 1.0,
        "fraction-evaluate": 1.0,
        "min-available-clients": 1,
        **{key: UNSET for key in strategies.PARAMETERS},
    }
    config.update({key.replace("_", "-"): value for key, value in parameters.items()})
    return strategies.build(config)


def aggregate(
    strategy: Strategy, updates: list[np.ndarray], examples: list[int] | None = None, current: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float], list[Message]]:
    """One round: configure_train for as many nodes as updates, a reply per message, aggregate_train."""
    examples = examples or [10] * len(updates)
    current = np.zeros(2) if current is None else current
    messages = list(strategy.configure_train(1, ArrayRecord([current]), ConfigRecord(), NodeGrid(len(updates))))
    replies = [
        Message(
            RecordDict({ARRAYS: ArrayRecord([update]), METRICS: MetricRecord({NUM_EXAMPLES: n, "loss": float(n)})}),
            reply_to=message,
        )
        for message, update, n in zip(messages, updates, examples, strict=True)
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    return arrays.to_numpy_ndarrays()[0], dict(metrics), messages


def test_fedavg_weights_by_examples() -> None:
    result, metrics, _ = aggregate(build("FedAvg"), HONEST[:2], examples=[30, 10])
    assert np.allclose(result, 0.75 * HONEST[0] + 0.25 * HONEST[1])
    assert metrics["loss"] == pytest.approx(0.75 * 30 + 0.25 * 10)


def test_fedprox_averages_and_sends_its_proximal_term() -> None:
    strategy = build("FedProx", proximal_mu=0.3)
    result, _, messages = aggregate(strategy, HONEST[:2])
    assert np.allclose(result, (HONEST[0] + HONEST[1]) / 2)
    assert all(m.content["config"]["proximal-mu"] == pytest.approx(0.3) for m in messages)


def test_fedavgm_server_learning_rate_and_momentum() -> None:
    current = np.array([3.0, 3.0])
    strategy = build("FedAvgM", server_learning_rate=0.5, server_momentum=0.9)
    result, _, _ = aggregate(strategy, HONEST[:2], current=current)
    average = (HONEST[0] + HONEST[1]) / 2
    assert np.allclose(result, current - 0.5 * (current - average))  # first round: momentum = gradient
    assert strategy.server_momentum == pytest.approx(0.9)


def _fedopt_first_round(eta: float, beta1: float, beta2: float, tau: float, delta: np.ndarray, kind: str) -> np.ndarray:
    m = (1 - beta1) * delta
    if kind == "adagrad":
        return eta * m / (np.sqrt(delta**2) + tau)
    v = (1 - beta2) * delta**2
    if kind == "adam":
        eta = eta * np.sqrt(1 - beta2**2) / (1 - beta1**2)
    return eta * m / (np.sqrt(v) + tau)


@pytest.mark.parametrize(
    ("name", "kind", "parameters"),
    [
        ("FedAdam", "adam", {"eta": 0.2, "eta_l": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 0.01}),
        ("FedYogi", "yogi", {"eta": 0.2, "eta_l": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 0.01}),
        ("FedAdagrad", "adagrad", {"eta": 0.2, "eta_l": 0.05, "tau": 0.01}),
    ],
)
def test_adaptive_server_optimisers(name: str, kind: str, parameters: dict[str, float]) -> None:
    result, _, _ = aggregate(build(name, **parameters), HONEST[:2])
    delta = (HONEST[0] + HONEST[1]) / 2  # current model is zero
    expected = _fedopt_first_round(
        parameters["eta"], parameters.get("beta1", 0.0), parameters.get("beta2", 0.0), parameters["tau"], delta, kind
    )
    assert np.allclose(result, expected)


def test_fedyogi_keeps_its_own_defaults_when_unset() -> None:
    strategy = build("FedYogi")
    assert strategy.eta == pytest.approx(1e-2) and strategy.beta_1 == pytest.approx(0.9)


def test_fedmedian_ignores_one_outlier() -> None:
    result, _, _ = aggregate(build("FedMedian"), [*HONEST[:2], OUTLIER])
    assert np.allclose(result, np.median(np.stack([*HONEST[:2], OUTLIER]), axis=0))


def test_fedtrimmedavg_cuts_both_ends() -> None:
    updates = [*HONEST[:4], OUTLIER]
    result, _, _ = aggregate(build("FedTrimmedAvg", beta=0.2), updates)
    stacked = np.sort(np.stack(updates), axis=0)[1:-1]  # 20% of 5 = one cut at each end
    assert np.allclose(result, stacked.mean(axis=0))


def test_krum_picks_an_honest_update() -> None:
    result, _, _ = aggregate(build("Krum", num_malicious_clients=1), [*HONEST[:4], OUTLIER])
    assert any(np.allclose(result, honest) for honest in HONEST[:4])


def test_multikrum_averages_the_updates_it_keeps() -> None:
    strategy = build("MultiKrum", num_malicious_clients=1, num_clients_to_keep=3)
    result, _, _ = aggregate(strategy, [*HONEST[:4], OUTLIER])
    assert strategy.num_nodes_to_select == 3
    assert np.all(np.abs(result - np.mean(HONEST[:4], axis=0)) < 0.3)


def test_bulyan_resists_an_outlier() -> None:
    result, _, _ = aggregate(build("Bulyan", num_malicious_clients=1), [*HONEST, *HONEST[:2], OUTLIER])
    assert np.all(np.abs(result - np.mean(HONEST, axis=0)) < 0.3)


def test_every_strategy_of_the_api_is_built() -> None:
    from kubeflower.core.vocabulary import StrategyName

    assert set(strategies.STRATEGIES) == {name.value for name in StrategyName}
    for name in strategies.STRATEGIES:
        assert type(build(name)).__name__ == name


def test_the_parameter_table_matches_flowers_constructors() -> None:
    """Each parameter is an argument of exactly the strategies the vocabulary gives it (FedAdam's
    and FedYogi's beta_1 are not FedAdagrad's), so the API refuses what Flower would not take."""
    import inspect

    from kubeflower.core.vocabulary import STRATEGY_PARAMETERS, StrategyName

    for name, parameter in STRATEGY_PARAMETERS.items():
        takers = {
            s
            for s in StrategyName
            if parameter.flower_argument in inspect.signature(strategies.STRATEGIES[s.value]).parameters
        }
        assert takers == set(parameter.strategies), name


def test_sampling_parameters_reach_the_strategy() -> None:
    config = {
        "strategy": "FedAvg",
        "fraction-train": 0.5,
        "fraction-evaluate": 0.0,
        "min-available-clients": 3,
        **{key: UNSET for key in strategies.PARAMETERS},
    }
    built = strategies.build(config)
    assert (built.fraction_train, built.fraction_evaluate, built.min_available_nodes) == (0.5, 0.0, 3)
    assert built.min_evaluate_nodes == 0


def test_a_parameter_of_another_strategy_is_refused() -> None:
    with pytest.raises(RunConfigError, match="'proximal-mu' does not apply to strategy FedAvg"):
        build("FedAvg", proximal_mu=0.1)
    with pytest.raises(RunConfigError, match="must be one of"):
        build("FedFoo")
