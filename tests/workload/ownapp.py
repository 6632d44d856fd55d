"""A Flower App of a user's own, written by the tests the way Flower's templates write one.

`Strategy.start` with a centralized `evaluate_fn`, a ClientApp with `@app.train` and `@app.evaluate`,
metrics named `train_loss`, `eval_loss`, `eval_acc` (and `accuracy`, `loss` on the server side), the
final model saved into the working directory. Its run config's `mode` makes it misbehave:
`fail-client` (every training raises), `fail-server` (the ServerApp raises after its first round),
`hostile` (forged progress lines, ten thousand metrics, an endless line).
"""

from __future__ import annotations

from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "ownapp"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "me"

[tool.flwr.app.components]
serverapp = "ownapp.server_app:app"
clientapp = "ownapp.client_app:app"

[tool.flwr.app.config]
{rounds_key} = 5
mode = "ok"
"""

SERVER_APP = """\
import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    mode = context.run_config["mode"]
    print("ownapp: starting, mode", mode, flush=True)
    if mode == "hostile":
        forged = '{"round": 999999, "metrics": {"accuracy": 1.0}, "replies": 999, "failures": 0, "seconds": 0}'
        print("KUBEFLOWER_ROUND " + forged, flush=True)
        print("x" * 3_000_000, flush=True)

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if mode == "fail-server" and server_round == 1:
            raise ValueError("model [resnet] wants input [3, 32, 32]; got [1, 8, 8]")
        value = float(arrays.to_numpy_ndarrays()[0][0])
        return MetricRecord({"accuracy": value / 100, "loss": 1.0 / (1.0 + value)})

    strategy = FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(3)]),
        num_rounds=int(context.run_config["{rounds_key}"]),
        evaluate_fn=central,
    )
    np.save("final_model.npy", result.arrays.to_numpy_ndarrays()[0])
    print("ownapp: model saved", flush=True)
"""

CLIENT_APP = """\
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    mode = context.run_config["mode"]
    if mode == "fail-client":
        raise RuntimeError("no training data [partition 0] in /data")
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    with open("client-was-here.txt", "w") as note:  # the ClientApp's working directory is writable
        note.write("ok")
    values = {"num-examples": 10, "train_loss": 1.0 / (1.0 + arrays[0][0])}
    if mode == "hostile":
        values |= {f"metric_{i:05d}": float(i) for i in range(10000)}
    metrics = MetricRecord(values)
    return Message(RecordDict({"arrays": ArrayRecord([arrays[0] + 10.0]), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    value = float(msg.content["arrays"].to_numpy_ndarrays()[0][0])
    metrics = MetricRecord({"num-examples": 10, "eval_loss": 2.0 / (1.0 + value), "eval_acc": value / 200})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
"""


def write_own_app(folder: Path, rounds_key: str = "num-server-rounds") -> Path:
    """The app project in `folder/ownapp` (declaring `rounds_key` for its rounds, default 5)."""
    app = folder / "ownapp"
    (app / "ownapp").mkdir(parents=True)
    (app / "pyproject.toml").write_text(PYPROJECT.format(rounds_key=rounds_key))
    (app / "ownapp" / "__init__.py").write_text("")
    (app / "ownapp" / "server_app.py").write_text(SERVER_APP.replace("{rounds_key}", rounds_key))
    (app / "ownapp" / "client_app.py").write_text(CLIENT_APP)
    return app
