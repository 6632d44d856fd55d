"""The built-in app's vocabularies, one table each: data sets, models, strategies and their parameters.

Everything else is derived from these tables: the API's enums (and so the CRD's), the cross-field
rules that pair a model with the data sets it fits and a strategy parameter with the strategies
that take it, the run-config keys (`kubeflower.core.runconfig`), and the workload's lookups (its
data loaders, its models, Flower's strategy classes and their arguments). A new data set, model,
strategy or parameter is one entry here plus its implementation in the workload; a test fails when
the workload lacks one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

Shape = tuple[int, int, int]
"""An image's channels, height and width."""

NUM_CLASSES: Final = 10
"""Every built-in data set has ten classes."""


class DatasetName(str, Enum):
    CIFAR10 = "cifar10"
    MNIST = "mnist"
    DIGITS = "digits"
    SYNTHETIC = "synthetic"


class ModelName(str, Enum):
    """`auto` picks the model made for the dataset's input shape."""

    AUTO = "auto"
    CIFAR_CNN = "cifar-cnn"
    MNIST_CNN = "mnist-cnn"
    DIGITS_CNN = "digits-cnn"
    RESNET18 = "resnet18"


class StrategyName(str, Enum):
    """Flower's strategies (`flwr.serverapp.strategy`), by their class names."""

    FED_AVG = "FedAvg"
    FED_PROX = "FedProx"
    FED_AVG_M = "FedAvgM"
    FED_ADAM = "FedAdam"
    FED_YOGI = "FedYogi"
    FED_ADAGRAD = "FedAdagrad"
    FED_MEDIAN = "FedMedian"
    FED_TRIMMED_AVG = "FedTrimmedAvg"
    KRUM = "Krum"
    MULTI_KRUM = "MultiKrum"
    BULYAN = "Bulyan"


@dataclass(frozen=True)
class Dataset:
    shape: Shape
    model: ModelName
    """What `model: auto` builds for it."""
    scale: float
    """Raw values are divided by this, then standardised per channel with `mean` and `std`."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision: str | None = None
    """The torchvision class that downloads it; None: it ships with the image or is generated."""


DATASETS: Final[Mapping[DatasetName, Dataset]] = {
    DatasetName.CIFAR10: Dataset(
        (3, 32, 32), ModelName.CIFAR_CNN, 255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"
    ),
    DatasetName.MNIST: Dataset((1, 28, 28), ModelName.MNIST_CNN, 255.0, (0.1307,), (0.3081,), "MNIST"),
    DatasetName.DIGITS: Dataset((1, 8, 8), ModelName.DIGITS_CNN, 16.0, (0.3049,), (0.3762,)),
    DatasetName.SYNTHETIC: Dataset((1, 8, 8), ModelName.DIGITS_CNN, 1.0, (0.0,), (1.0,)),
}

MODEL_INPUTS: Final[Mapping[ModelName, Shape]] = {
    ModelName.CIFAR_CNN: (3, 32, 32),
    ModelName.MNIST_CNN: (1, 28, 28),
    ModelName.DIGITS_CNN: (1, 8, 8),
    ModelName.RESNET18: (3, 32, 32),
}
"""The input shape of each model (every one but `auto`)."""


def datasets_for(model: ModelName) -> tuple[DatasetName, ...]:
    """The data sets whose images a model takes."""
    return tuple(name for name, dataset in DATASETS.items() if dataset.shape == MODEL_INPUTS[model])


class VocabularyError(ValueError):
    """A name outside a vocabulary, or a model that does not fit the data set."""


def resolve_model(model: str, dataset: str) -> ModelName:
    """The model to build for the data set (`auto` resolved); a clear error when they do not fit."""
    try:
        data = DATASETS[DatasetName(dataset)]
    except ValueError:
        raise VocabularyError(f"unknown dataset {dataset!r}; use one of {_names(DatasetName)}") from None
    try:
        name = ModelName(model)
    except ValueError:
        raise VocabularyError(f"unknown model {model!r}; use one of {_names(ModelName)}") from None
    name = data.model if name == ModelName.AUTO else name
    if MODEL_INPUTS[name] != data.shape:
        shape, have = _shape(MODEL_INPUTS[name]), _shape(data.shape)
        raise VocabularyError(
            f"model {name.value} takes {shape} inputs but dataset {dataset} has {have}; use model auto"
        )
    return name


@dataclass(frozen=True)
class StrategyParameter:
    """A strategy's own parameter: the strategies that take it, and how Flower's constructor names it."""

    strategies: tuple[StrategyName, ...]
    flower_argument: str
    kind: type[int] | type[float]


_ADAPTIVE = (StrategyName.FED_ADAM, StrategyName.FED_YOGI, StrategyName.FED_ADAGRAD)
_ADAM = (StrategyName.FED_ADAM, StrategyName.FED_YOGI)
_BYZANTINE = (StrategyName.KRUM, StrategyName.MULTI_KRUM, StrategyName.BULYAN)

STRATEGY_PARAMETERS: Final[Mapping[str, StrategyParameter]] = {
    "proximalMu": StrategyParameter((StrategyName.FED_PROX,), "proximal_mu", float),
    "serverLearningRate": StrategyParameter((StrategyName.FED_AVG_M,), "server_learning_rate", float),
    "serverMomentum": StrategyParameter((StrategyName.FED_AVG_M,), "server_momentum", float),
    "eta": StrategyParameter(_ADAPTIVE, "eta", float),
    "etaL": StrategyParameter(_ADAPTIVE, "eta_l", float),
    "beta1": StrategyParameter(_ADAM, "beta_1", float),
    "beta2": StrategyParameter(_ADAM, "beta_2", float),
    "tau": StrategyParameter(_ADAPTIVE, "tau", float),
    "beta": StrategyParameter((StrategyName.FED_TRIMMED_AVG,), "beta", float),
    "numMaliciousClients": StrategyParameter(_BYZANTINE, "num_malicious_nodes", int),
    "numClientsToKeep": StrategyParameter((StrategyName.MULTI_KRUM,), "num_nodes_to_select", int),
}
"""Each optional strategy parameter, by its name in the API (`spec.strategy.<name>`)."""


def run_config_key(api_name: str) -> str:
    """A spec field's key in the run config: Flower's kebab-case (`etaL` -> `eta-l`)."""
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in api_name)


def _names(vocabulary: type[Enum]) -> str:
    return ", ".join(member.value for member in vocabulary)


def _shape(shape: Shape) -> str:
    return "x".join(map(str, shape))
