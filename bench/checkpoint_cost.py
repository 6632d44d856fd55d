"""What a checkpoint per round costs the built-in ServerApp: seconds and bytes per round.

    .venv/bin/python -m bench.checkpoint_cost [--repeat 5] [--folder DIR]

For the digits CNN and ResNet-18 (CIFAR-10), the checkpoint a round writes
(`kubeflower_workload.checkpoints.save`: the model, the strategy's state, the JSON, fsync, rename,
pruning) with FedAvg (no state) and FedAdam (two moments the size of the model), into `--folder`
(default: a temporary folder; give one on the volume you mean to use). Prints the median of
`--repeat` saves and the checkpoint's size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg

from kubeflower.core.server_status import RoundRecord
from kubeflower_workload import checkpoints, models


def measure(model_name: str, strategy: FedAvg, folder: Path, repeat: int) -> tuple[float, int]:
    """(median seconds of a save, bytes of one checkpoint)."""
    torch.manual_seed(0)
    arrays = ArrayRecord(models.build(model_name).state_dict())
    if isinstance(strategy, FedAdam):  # the moments as they are after a round: one array per tensor
        strategy.m_t = {k: np.ones_like(v.numpy()) for k, v in arrays.items()}
        strategy.v_t = {k: np.ones_like(v.numpy()) for k, v in arrays.items()}
    history = [RoundRecord(round=r, metrics={"loss": 0.1, "accuracy": 0.9}) for r in range(1, 101)]
    seconds = []
    for r in range(1, repeat + 1):
        started = time.perf_counter()
        saved = checkpoints.save(folder, r, "uid", arrays, strategy, history, None)
        seconds.append(time.perf_counter() - started)
    size = saved.tensors.stat().st_size + saved.tensors.with_suffix(".json").stat().st_size
    return statistics.median(seconds), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        print(f"checkpoints written to {tmp}, median of {args.repeat}")
        for model_name in ("digits-cnn", "resnet18"):
            for strategy in (FedAvg(), FedAdam()):
                folder = Path(tmp) / f"{model_name}-{type(strategy).__name__}"
                seconds, size = measure(model_name, strategy, folder, args.repeat)
                print(f"{model_name:11} {type(strategy).__name__:7} {seconds:7.3f} s  {size / 1e6:7.2f} MB")


if __name__ == "__main__":
    main()
