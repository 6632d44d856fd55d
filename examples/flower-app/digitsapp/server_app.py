"""digitsapp: the ServerApp, FedAvg over the clients for `num-server-rounds` rounds.

As Flower's templates write it: `strategy.start` with a centralized `evaluate_fn`, and the final
model saved with `torch.save` into the working directory (KubeFlower's output folder's `app/`).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digitsapp.task import Net, load_centralized_test
from digitsapp.task import test as test_fn

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg from a seeded model, evaluating each round's model on the server's test set too."""
    num_rounds = int(context.run_config["num-server-rounds"])
    torch.manual_seed(0)
    strategy = FedAvg(fraction_evaluate=float(context.run_config["fraction-evaluate"]))
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        train_config=ConfigRecord({"lr": float(context.run_config["learning-rate"])}),
        num_rounds=num_rounds,
        evaluate_fn=global_evaluate,
    )
    print(f"Final evaluation: {result.evaluate_metrics_clientapp.get(num_rounds)}")
    print("Saving final model to disk...")
    torch.save(result.arrays.to_torch_state_dict(), "final_model.pt")


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Evaluate the round's global model on the server's own test set (centralized evaluation)."""
    model = Net()
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, accuracy = test_fn(model, load_centralized_test())
    return MetricRecord({"accuracy": accuracy, "loss": loss})
