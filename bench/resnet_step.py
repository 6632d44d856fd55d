"""Seconds per training step of ResNet-18 on CIFAR-shaped data, on the device the built-in app
would choose here (the GPU when this process sees one, else the CPU), through the app's own
`device.place` and `training.train`.

    .venv/bin/python bench/resnet_step.py [--batch-size 32] [--steps 10] [--threads N]

Synthetic 3x32x32 images (CIFAR-10's shape and class count) so nothing is downloaded. The first
step (warm-up: allocation, cuDNN's choice of kernels) is timed apart from the rest.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from kubeflower_workload import device, models, training


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def seconds_per_step(batch_size: int, steps: int) -> tuple[str, float, float]:
    where = device.select()
    generator = torch.Generator().manual_seed(0)
    data = Batch(
        torch.randn(batch_size * steps, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (batch_size * steps,), generator=generator),
    )
    model, data = device.place(models.build("resnet18"), data, where)

    def run(n: int) -> float:
        start = time.perf_counter()
        training.train(
            model,
            data.x[: batch_size * n],
            data.y[: batch_size * n],
            epochs=1,
            batch_size=batch_size,
            learning_rate=0.01,
            seed=0,
        )  # float(loss) at its end waits for the device
        return time.perf_counter() - start

    warmup = run(1)
    return str(where), warmup, run(steps) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch's CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    where, warmup, per_step = seconds_per_step(args.batch_size, args.steps)
    name = torch.cuda.get_device_name(0) if where.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"resnet18, batch {args.batch_size}, 3x32x32, {where} ({name}): "
        f"{per_step:.3f} s per step ({args.batch_size / per_step:.0f} images/s), first step {warmup:.3f} s"
    )


if __name__ == "__main__":
    main()
