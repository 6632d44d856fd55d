"""The built-in ServerApp: Flower's strategy, driven round by round, one event per round.

The rounds are driven here rather than by `Strategy.start` for three reasons:
- progress: each finished round is printed as one structured event (`progress.event_line`);
- latency: replies are pulled through the Grid's public `push_messages`/`pull_messages` every
  POLL_INTERVAL seconds, where `send_and_receive` sleeps 3 s between pulls;
- fused rounds (`fused-train-evaluate`, on by default): every ClientApp message starts a process
  that imports torch (seconds), so each round sends one message that first evaluates the model it
  received and then trains it. The evaluation of round r's model arrives with round r+1's replies
  (the last round's from one final evaluate message), so a round's event is printed one round
  later, with the same numbers as the separate train and evaluate messages would give.
The strategy's own methods (`configure_*`, `aggregate_*`, its metric aggregation) do all the
federated-learning work; this module only moves messages and times rounds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from kubeflower.core import contract
from kubeflower.core.server_status import RoundRecord
from kubeflower_workload import checkpoints, progress, strategies, wire
from kubeflower_workload.appconfig import TaskConfig
from kubeflower_workload.messages import ARRAYS, EVALUATE_RECEIVED, EVALUATION, LAYOUT, METRICS

POLL_INTERVAL = 0.2
"""Seconds between pulls for replies: a round waits 0.1 s longer on average than it must, against
Flower's 3 s, for 5 small HTTP calls a second to the SuperLink in the same pod while it waits."""
NODES_POLL_INTERVAL = 0.5
"""Seconds between looks at the connected nodes while a round waits for `min_available_nodes`."""
REPLY_TIMEOUT = 3600.0
"""Seconds a round waits for its replies; a SuperNode that dies is reported by Flower sooner."""

OnRound = Callable[[RoundRecord], None]
OnCheckpoint = Callable[[int, ArrayRecord, RoundRecord | None], None]
"""(round, the model after it, a fused round's record still awaiting its evaluation)."""


@dataclass(frozen=True)
class Start:
    """Where the rounds begin: after `round` (0: from the start), with that round's model."""

    arrays: ArrayRecord
    round: int = 0
    pending: RoundRecord | None = None


class RoundFailed(RuntimeError):
    """No client succeeded in a round: the run stops with the clients' own error."""


def main(grid: Grid, context: Context) -> None:
    """The ServerApp's body: rounds, then the final model into the output folder."""
    import torch

    from kubeflower_workload import models

    task = TaskConfig.from_run_config(context.run_config)
    strategy = strategies.build(context.run_config)
    torch.manual_seed(task.seed)
    model = models.build(task.model)
    start = Start(ArrayRecord(model.state_dict()))
    output = os.environ.get(contract.ENV_OUTPUT_DIR)
    keeper = None
    if output:
        keeper = checkpoints.Keeper(
            contract.OutputFolder(Path(output)).checkpoints, os.environ.get(contract.ENV_JOB_UID, ""), strategy
        )
        start = resume(keeper, start)

    def on_round(record: RoundRecord) -> None:
        print(progress.event_line(record), flush=True)
        if keeper is not None:
            keeper.reported(record)

    arrays = federate(
        grid,
        strategy,
        start,
        task.num_rounds,
        fused=task.fused_train_evaluate,
        on_round=on_round,
        on_checkpoint=keeper.save if keeper is not None else None,
    )
    if output:
        path = contract.OutputFolder(Path(output)).final_model
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(arrays.to_torch_state_dict(), path)
        log(INFO, "final model (%s, state_dict) written to %s", task.model, path)
    else:
        log(INFO, "%s is not set: the final model is not saved", contract.ENV_OUTPUT_DIR)


def resume(keeper: checkpoints.Keeper, fresh: Start) -> Start:
    """Where a run of this job begins: after its latest checkpoint, or `fresh` when it has none."""
    found = checkpoints.latest(keeper.folder, keeper.job_uid)
    if found is None:
        log(INFO, "no checkpoint of this job in %s: starting at round 1", keeper.folder)
        return fresh
    arrays = checkpoints.load(found, keeper.strategy)
    keeper.history = list(found.history)
    log(INFO, "resuming after round %d from its checkpoint %s", found.round, found.tensors)
    return Start(arrays, found.round, found.pending)


def federate(
    grid: Grid,
    strategy: FedAvg,
    start: Start,
    num_rounds: int,
    *,
    fused: bool,
    on_round: OnRound,
    on_checkpoint: OnCheckpoint | None = None,
) -> ArrayRecord:
    """Run the rounds after `start.round`; `on_round` gets each round once its evaluation is known,
    `on_checkpoint` the state after each round. Returns the model."""
    # A fused message evaluates on the clients sampled to train: only right when both samples match.
    fused = fused and strategy.fraction_evaluate == strategy.fraction_train
    log(INFO, "%d rounds, %s", num_rounds, "fused train+evaluate messages" if fused else "train, then evaluate")
    arrays = start.arrays
    awaiting = start.pending if fused else None  # fused: trained, its evaluation comes with the next replies
    for server_round in range(start.round + 1, num_rounds + 1):
        started = time.monotonic()
        config = ConfigRecord({EVALUATE_RECEIVED: True} if fused else {})
        wait_for_nodes(grid, strategy)
        replies = exchange(grid, strategy.configure_train(server_round, arrays, config, grid))
        valid = _valid(replies, server_round)
        aggregated, train_metrics = strategy.aggregate_train(server_round, replies)
        arrays = aggregated if aggregated is not None else arrays
        record = RoundRecord(round=server_round, replies=len(valid), failures=len(replies) - len(valid))
        record.set_metrics("train_metrics", _numbers(train_metrics))
        if fused:
            if awaiting is not None:
                _report(awaiting, received_evaluation(strategy, valid), on_round)
            record.seconds = round(time.monotonic() - started, 3)
            awaiting = record
        else:
            evaluated = strategy.aggregate_evaluate(server_round, _evaluate(grid, strategy, server_round, arrays))
            record.seconds = round(time.monotonic() - started, 3)
            _report(record, evaluated, on_round)
        if on_checkpoint is not None:
            on_checkpoint(server_round, arrays, awaiting)
    if awaiting is not None:
        # The last round's evaluation is a message of its own: its time is the last round's.
        started = time.monotonic()
        evaluated = strategy.aggregate_evaluate(num_rounds, _evaluate(grid, strategy, num_rounds, arrays))
        awaiting.seconds = round(awaiting.seconds + time.monotonic() - started, 3)
        _report(awaiting, evaluated, on_round)
    return arrays


def wait_for_nodes(grid: Grid, strategy: FedAvg) -> None:
    """Wait until the strategy's `min_available_nodes` are connected.

    Flower's strategies size a round's sample from the nodes connected when the round is
    configured, and only then wait for `min_available_nodes`: a first round configured while the
    clients are still connecting (the usual case in a cluster: they start once the server is ready)
    would train on fewer of them than `fraction_train` says -- one of two, say.
    """
    needed = getattr(strategy, "min_available_nodes", 0)
    while len(list(grid.get_node_ids())) < needed:
        time.sleep(NODES_POLL_INTERVAL)


def exchange(grid: Grid, messages: Iterable[Message], timeout: float = REPLY_TIMEOUT) -> list[Message]:
    """Push the messages (their model packed, see `wire`) and pull every reply (or stop at the
    timeout), each reply's model unpacked and checked against the one its message carried."""
    outgoing = list(messages)
    models = _pack_models(outgoing)
    sent = {
        message_id: (message, model)
        for message_id, message, model in zip(grid.push_messages(outgoing), outgoing, models, strict=True)
        if message_id
    }
    waiting = set(sent)
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        pulled = list(grid.pull_messages(list(waiting)))
        replies.extend(_unpack_model(reply, *sent[reply.metadata.reply_to_message_id]) for reply in pulled)
        waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
        if waiting:
            time.sleep(POLL_INTERVAL)
    return replies


def _pack_models(messages: list[Message]) -> list[wire.Shapes | None]:
    """Pack each message's model in place; returns the names and shapes of the model each one
    carries (None: no model).

    Flower's strategies give every message of a round the same RecordDict: it is packed once.
    """
    sent: dict[int, wire.Shapes | None] = {}
    for message in messages:
        content = message.content
        if id(content) not in sent:
            sent[id(content)] = None
            if ARRAYS in content.array_records:
                model = content.array_records[ARRAYS]
                content[ARRAYS], content[LAYOUT] = wire.pack_record(model)
                sent[id(content)] = wire.shapes(model)
    return [sent[id(message.content)] for message in messages]


def _unpack_model(reply: Message, message: Message, sent: wire.Shapes | None) -> Message:
    """The reply with its model per tensor again, as the strategy reads it; a model that is not
    the one sent (other names or shapes, or packed arrays that do not fit their layout)
    makes the reply a failure, which the strategy leaves out and the round counts."""
    if sent is None or reply.has_error() or ARRAYS not in reply.content.array_records:
        return reply
    try:
        tensors, _ = wire.received(reply.content)
        if wire.shapes(tensors) != sent:
            raise wire.WireError("its model's tensors differ from the model sent (names or shapes)")
    except wire.WireError as error:
        reason = f"the reply of node {reply.metadata.src_node_id} is refused: {error}"
        log(WARNING, "%s", reason)
        return Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=message)
    reply.content[ARRAYS] = ArrayRecord({name: Array(value) for name, value in tensors.items()})
    if LAYOUT in reply.content:
        del reply.content[LAYOUT]
    return reply


def received_evaluation(strategy: FedAvg, replies: list[Message]) -> MetricRecord | None:
    """Aggregate the evaluations carried by fused train replies, as `aggregate_evaluate` would."""
    records = [
        RecordDict({METRICS: _metrics(reply.content.config_records[EVALUATION])})
        for reply in replies
        if EVALUATION in reply.content
    ]
    return strategy.evaluate_metrics_aggr_fn(records, strategy.weighted_by_key) if records else None


def _metrics(record: ConfigRecord) -> MetricRecord:
    """The numbers of a ConfigRecord (the evaluation a fused reply carries) as a MetricRecord."""
    return MetricRecord({key: value for key, value in record.items() if isinstance(value, int | float)})


def _evaluate(grid: Grid, strategy: FedAvg, server_round: int, arrays: ArrayRecord) -> list[Message]:
    wait_for_nodes(grid, strategy)
    return exchange(grid, strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid))


def _valid(replies: list[Message], server_round: int) -> list[Message]:
    valid = [reply for reply in replies if not reply.has_error()]
    if replies and not valid:
        reasons = sorted({reply.error.reason or f"error code {reply.error.code}" for reply in replies})
        raise RoundFailed(f"round {server_round}: all {len(replies)} clients failed: {'; '.join(reasons)}")
    return valid


def _report(record: RoundRecord, evaluated: MetricRecord | None, on_round: OnRound) -> None:
    record.set_metrics("metrics", _numbers(evaluated))
    log(INFO, "round %d: %s", record.round, progress.summary(record))
    on_round(record)


def _numbers(metrics: MetricRecord | None) -> dict[str, float]:
    """The scalar metrics (a MetricRecord may also hold lists, which the status does not show)."""
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
