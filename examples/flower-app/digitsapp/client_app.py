"""digitsapp: the ClientApp, one handler for training and one for evaluation."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digitsapp.task import Net, load_data
from digitsapp.task import test as test_fn
from digitsapp.task import train as train_fn

torch.set_num_threads(1)
app = ClientApp()


def _data(context: Context) -> tuple:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    return load_data(partition_id, num_partitions, int(context.run_config["batch-size"]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on the local data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    trainloader, _ = _data(context)
    train_loss = train_fn(
        model, trainloader, int(context.run_config["local-epochs"]), float(msg.content["config"]["lr"])
    )
    metrics = MetricRecord({"train_loss": train_loss, "num-examples": len(trainloader.dataset)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on the local test data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, testloader = _data(context)
    eval_loss, eval_acc = test_fn(model, testloader)
    metrics = MetricRecord({"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(testloader.dataset)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
