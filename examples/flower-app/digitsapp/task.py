"""digitsapp: the model, the data and the training loop."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    """A small MLP for 8x8 images of digits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_data(partition_id: int, num_partitions: int, batch_size: int) -> tuple[DataLoader, DataLoader]:
    """This client's shard of the digits (every num_partitions-th sample), 80 % train, 20 % test."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images[partition_id::num_partitions] / 16.0, dtype=torch.float32)
    y = torch.tensor(labels[partition_id::num_partitions], dtype=torch.long)
    split = int(0.8 * len(x))
    generator = torch.Generator().manual_seed(partition_id)
    train = DataLoader(TensorDataset(x[:split], y[:split]), batch_size=batch_size, shuffle=True, generator=generator)
    test = DataLoader(TensorDataset(x[split:], y[split:]), batch_size=batch_size)
    return train, test


def load_centralized_test(batch_size: int = 256) -> DataLoader:
    """The server's own test set for the centralized evaluation: every 10th sample of the digits."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images[::10] / 16.0, dtype=torch.float32)
    y = torch.tensor(labels[::10], dtype=torch.long)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def train(net: Net, loader: DataLoader, epochs: int, lr: float) -> float:
    """Train the model on the training set; the average loss."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    net.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def test(net: Net, loader: DataLoader) -> tuple[float, float]:
    """The loss and accuracy of the model on the test set."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    net.eval()
    loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = net(x)
            loss += criterion(out, y).item()
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
    return loss / seen, correct / seen
