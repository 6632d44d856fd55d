"""The stock-style ClientApp: one message to train, another to evaluate, as in Flower's template."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from stock_app.task import Net, load_data, test, train

app = ClientApp()


def _setup(msg: Message, context: Context):
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    net = Net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return net, partition_id, load_data(partition_id, num_partitions, context.run_config)


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    net, partition_id, (x_train, y_train, _, _) = _setup(msg, context)
    config = context.run_config
    server_round = int(msg.content["config"]["server-round"])
    seed = int(np.random.SeedSequence([int(config["seed"]), server_round, partition_id]).generate_state(1)[0])
    loss = train(
        net,
        x_train,
        y_train,
        int(config["local-epochs"]),
        int(config["batch-size"]),
        float(config["learning-rate"]),
        seed,
    )
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(y_train)})
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    net, _, (_, _, x_test, y_test) = _setup(msg, context)
    loss, accuracy = test(net, x_test, y_test, int(context.run_config["batch-size"]))
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(y_test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
