"""Model, data and training, imported eagerly as in Flower's quickstart-pytorch `task.py`.

The numbers are meant to match the built-in app's on the same seed, so the data, the partitions
and the model come from the same functions (`kubeflower_workload.partitioning`, `models`) and the
optimiser is torch's SGD with the same momentum (the built-in app's hand-written step computes the
same update); evaluation is the built-in app's own. What differs is only what stock apps pay for:
scikit-learn to load digits, and `torch.optim`, which imports torch._dynamo on first use, in
every ClientApp process.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from kubeflower_workload import models, partitioning, training

# Flower's template calls evaluation `test`; the client app imports it from here.
test = training.evaluate

MODEL = "digits-cnn"
MOMENTUM = 0.9
MEAN, STD = 0.3049, 0.3762


def Net() -> nn.Module:
    return models.build(MODEL)


def load_data(partition_id: int, num_partitions: int, config: dict):
    """This partition's (x_train, y_train, x_test, y_test), as the built-in app splits digits."""
    digits = load_digits()
    x = (digits.images.astype(np.float32)[:, None, :, :] / 16.0 - MEAN) / STD
    y = digits.target.astype(np.int64)
    seed = int(config["partition-seed"])
    parts = partitioning.partition(y, num_partitions, "iid", 0.5, seed)
    train_rows, test_rows = partitioning.train_test_split(
        parts[partition_id], float(config["test-fraction"]), seed + partition_id
    )
    return (
        torch.from_numpy(x[train_rows]),
        torch.from_numpy(y[train_rows]),
        torch.from_numpy(x[test_rows]),
        torch.from_numpy(y[test_rows]),
    )


def train(net: nn.Module, x, y, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
    return total / max(batches, 1)
