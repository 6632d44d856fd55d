"""The built-in ClientApp's work: this client's data, and training or evaluating a received model.

Everything a message needs is loaded per message (Flower runs each message in a new process);
nothing heavier than torch is imported unless the data set needs it (see `datasets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from kubeflower_workload import datasets, device, models, partitioning, training, wire
from kubeflower_workload.appconfig import TaskConfig
from kubeflower_workload.messages import ARRAYS, CONFIG, EVALUATE_RECEIVED, EVALUATION, LAYOUT, METRICS, NUM_EXAMPLES


@dataclass(frozen=True)
class LocalData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def partition_of(node_config: dict[str, Any]) -> tuple[int, int]:
    """(partition id, number of partitions) from the SuperNode's `--node-config`."""
    try:
        partition_id, num_partitions = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            "this SuperNode has no valid partition-id/num-partitions in its --node-config "
            f"(got {dict(node_config)!r}); start clients with kubeflower-client"
        ) from None
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    return partition_id, num_partitions


def local_data(task: TaskConfig, partition_id: int, num_partitions: int, folder: Path) -> LocalData:
    """This client's share of the data set, split into its train and test parts."""
    data = datasets.load(task.dataset, folder)
    parts = partitioning.partition(data.y, num_partitions, task.partitioning, task.dirichlet_alpha, task.partition_seed)
    train, test = partitioning.train_test_split(
        parts[partition_id], task.test_fraction, task.partition_seed + partition_id
    )
    return LocalData(data.features(train), data.labels(train), data.features(test), data.labels(test))


def train(msg: Message, context: Context) -> Message:
    """Train the received model on the local data (after evaluating it, when the server asks)."""
    task, model, data, partition_id, packed = _prepare(msg, context)
    config = msg.content.config_records[CONFIG]
    records: dict[str, Any] = {}
    if config.get(EVALUATE_RECEIVED, False):
        loss, accuracy = training.evaluate(model, data.x_test, data.y_test, task.batch_size)
        records[EVALUATION] = ConfigRecord({"loss": loss, "accuracy": accuracy, NUM_EXAMPLES: len(data.y_test)})
    server_round = int(_number(config, "server-round", 0))
    train_loss = training.train(
        model,
        data.x_train,
        data.y_train,
        epochs=task.local_epochs,
        batch_size=task.batch_size,
        learning_rate=task.learning_rate,
        seed=int(np.random.SeedSequence([task.seed, server_round, partition_id]).generate_state(1)[0]),
        proximal_mu=float(_number(config, "proximal-mu", 0.0)),
    )
    records.update(_model_records(model, packed))
    records[METRICS] = MetricRecord({"loss": train_loss, NUM_EXAMPLES: len(data.y_train)})
    return Message(RecordDict(records), reply_to=msg)


def _number(config: ConfigRecord, key: str, default: float) -> float:
    """A number the server's strategy put into the message's config."""
    value = config.get(key, default)
    if not isinstance(value, int | float):
        raise TypeError(f"the server sent {key}={value!r}, not a number")
    return value


def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the received model on the local test part."""
    task, model, data, _, _ = _prepare(msg, context)
    loss, accuracy = training.evaluate(model, data.x_test, data.y_test, task.batch_size)
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, NUM_EXAMPLES: len(data.y_test)})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)


def _prepare(msg: Message, context: Context) -> tuple[TaskConfig, torch.nn.Module, LocalData, int, bool]:
    """The task, the received model, this client's data and partition, and whether the model came
    packed (see `wire`)."""
    task = TaskConfig.from_run_config(context.run_config)
    partition_id, num_partitions = partition_of(context.node_config)
    model = models.build(task.model)
    tensors, packed = wire.received(msg.content)
    model.load_state_dict({name: torch.from_numpy(value) for name, value in tensors.items()})
    data = local_data(task, partition_id, num_partitions, datasets.data_dir())
    # Here, in the process that trains: the GPU when the pod has one; model and data moved once.
    model, data = device.place(model, data, device.select())
    return task, model, data, partition_id, packed


def _model_records(model: torch.nn.Module, packed: bool) -> dict[str, ArrayRecord | ConfigRecord]:
    """The trained model for the reply, in the form the server sent it in."""
    if not packed:
        return {ARRAYS: ArrayRecord(model.state_dict())}
    arrays, layout = wire.pack({name: value.detach().cpu().numpy() for name, value in model.state_dict().items()})
    return {ARRAYS: arrays, LAYOUT: layout}
