"""The built-in app's models, by name, and the data shape each one takes."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kubeflower_workload.datasets import NUM_CLASSES, SHAPES

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar-cnn": (3, 32, 32),
    "mnist-cnn": (1, 28, 28),
    "digits-cnn": (1, 8, 8),
    "resnet18": (3, 32, 32),
}
AUTO: dict[str, str] = {"cifar10": "cifar-cnn", "mnist": "mnist-cnn", "digits": "digits-cnn", "synthetic": "digits-cnn"}
"""`model: auto`: the model made for the data set's shape."""


class CifarCNN(nn.Module):
    """Flower's PyTorch quickstart `Net` (kubeFlower's CIFAR-10 model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        logits: torch.Tensor = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return logits


class SmallCNN(nn.Module):
    """Two conv-pool blocks and two dense layers: the MNIST and digits models differ in size only."""

    def __init__(self, side: int, kernel: int, padding: int, channels: tuple[int, int], hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], kernel, padding=padding)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, padding=padding)
        after = ((side + 2 * padding - kernel + 1) // 2 + 2 * padding - kernel + 1) // 2
        self.fc1 = nn.Linear(channels[1] * after * after, hidden)
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        logits: torch.Tensor = self.fc2(F.relu(self.fc1(x.flatten(1))))
        return logits


def resolve(model: str, dataset: str) -> str:
    """The model to build for the data set; a clear error when the shapes do not fit."""
    if dataset not in SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(SHAPES)}")
    name = AUTO[dataset] if model == "auto" else model
    if name not in INPUT_SHAPES:
        raise ValueError(f"unknown model {model!r}; use auto or one of {', '.join(INPUT_SHAPES)}")
    if INPUT_SHAPES[name] != SHAPES[dataset]:
        shape = "x".join(map(str, INPUT_SHAPES[name]))
        have = "x".join(map(str, SHAPES[dataset]))
        raise ValueError(f"model {name} takes {shape} inputs but dataset {dataset} has {have}; use model auto")
    return name


def build(name: str) -> nn.Module:
    """A freshly initialised model (seed torch first for a reproducible start)."""
    if name == "cifar-cnn":
        return CifarCNN()
    if name == "mnist-cnn":
        return SmallCNN(side=28, kernel=5, padding=0, channels=(16, 32), hidden=128)
    if name == "digits-cnn":
        return SmallCNN(side=8, kernel=3, padding=1, channels=(16, 32), hidden=64)
    if name == "resnet18":
        from torchvision.models import resnet18

        resnet: nn.Module = resnet18(weights=None, num_classes=NUM_CLASSES)
        return resnet
    raise ValueError(f"unknown model {name!r}; use one of {', '.join(INPUT_SHAPES)}")
