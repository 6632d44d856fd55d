"""Where the built-in app computes: the pod's GPU when it has one, else the CPU.

The choice is made by `select()`, called in the process that trains (Flower's ClientApp process,
once per message), never when a module is imported: asking CUDA anything initialises its driver in
that process, and a process that forks after that hands its children a CUDA context they cannot
use. A pod sees a GPU only when it asked for one (`nvidia.com/gpu` in its resources: the device
plugin mounts the device and its driver); `CUDA_VISIBLE_DEVICES=""` in `spec.clients.env` hides it.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def select() -> torch.device:
    """The first GPU this process sees, else the CPU (and then nothing changes from before)."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def place(model: nn.Module, data: T, device: torch.device) -> tuple[nn.Module, T]:
    """The model and every tensor of a frozen dataclass of tensors on `device`, moved once: training
    then indexes batches on the device, with no copy per step. On the CPU nothing is copied."""
    if not is_dataclass(data) or isinstance(data, type):
        raise TypeError(f"expected a dataclass instance of tensors, got {type(data).__name__}")
    moved = {f.name: getattr(data, f.name).to(device) for f in fields(data)}
    return model.to(device), replace(data, **moved)
