"""The built-in app's models, by name (their input shapes: `kubeflower.core.vocabulary.MODEL_INPUTS`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kubeflower.core.vocabulary import MODEL_INPUTS, NUM_CLASSES


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
    raise ValueError(f"unknown model {name!r}; use one of {', '.join(m.value for m in MODEL_INPUTS)}")
