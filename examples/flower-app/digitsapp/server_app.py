"""digitsapp: the ServerApp, FedAvg over the clients for `num-server-rounds` rounds."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digitsapp.task import Net

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg from a seeded model."""
    num_rounds = int(context.run_config["num-server-rounds"])
    torch.manual_seed(0)
    strategy = FedAvg(fraction_evaluate=float(context.run_config["fraction-evaluate"]))
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        train_config=ConfigRecord({"lr": float(context.run_config["learning-rate"])}),
        num_rounds=num_rounds,
    )
    print(f"Final evaluation: {result.evaluate_metrics_clientapp.get(num_rounds)}")
