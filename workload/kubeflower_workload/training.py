"""Local training and evaluation of the built-in app, on tensors already in memory.

The optimiser is a hand-written SGD step with momentum: `torch.optim` pulls in `torch._dynamo`
on first use, about a second of import in every ClientApp process (one per message), for a loop
of three lines. FedProx's proximal term, (mu/2)·||w - w_global||², enters as its gradient
mu·(w - w_global).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MOMENTUM = 0.9


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    proximal_mu: float = 0.0,
) -> float:
    """Train in place; returns the mean training loss over all batches (without the proximal term)."""
    params = [p for p in model.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    velocity = [torch.zeros_like(p) for p in params]
    generator = torch.Generator().manual_seed(seed)
    model.train()
    # Summed on the device in float64 (the sum a Python float gives): no GPU sync per step.
    total, batches = torch.zeros((), dtype=torch.float64, device=x.device), 0
    for _ in range(epochs):
        # Drawn on the CPU (the same order on every device for a seed), then moved to the data.
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for i, p in enumerate(params):
                    grad = p.grad
                    if grad is None:
                        raise RuntimeError("a model parameter took no part in the loss: it has no gradient")
                    if proximal_mu > 0:
                        grad = grad + proximal_mu * (p - anchors[i])
                    velocity[i].mul_(MOMENTUM).add_(grad)
                    p.sub_(learning_rate * velocity[i])
            total += loss.detach().to(torch.float64)
            batches += 1
    return float(total) / max(batches, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    return loss_sum / len(x), correct / len(x)
