"""Turning a run's log and Flower's run status into the status document (pure)."""

from __future__ import annotations

import math

from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus
from kubeflower_workload import progress
from kubeflower_workload.control import RunState

# What `Strategy.start` logs (flwr 1.42), colour codes included, as StreamLogs delivers it.
FLOWER_LOG = """\x1b[92mINFO \x1b[0m:      Starting FedAvg strategy:
\x1b[92mINFO \x1b[0m:      \t├── Number of rounds: 2
\x1b[92mINFO \x1b[0m:     \x20
\x1b[92mINFO \x1b[0m:      [ROUND 1/2]
\x1b[92mINFO \x1b[0m:      configure_train: Sampled 2 nodes (out of 2)
\x1b[92mINFO \x1b[0m:      aggregate_train: Received 2 results and 0 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'loss': 1.0}
\x1b[92mINFO \x1b[0m:      configure_evaluate: Sampled 2 nodes (out of 2)
\x1b[92mINFO \x1b[0m:      aggregate_evaluate: Received 2 results and 0 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'loss': 0.5, 'accuracy': 0.9}
\x1b[92mINFO \x1b[0m:     \x20
\x1b[92mINFO \x1b[0m:      [ROUND 2/2]
\x1b[92mINFO \x1b[0m:      configure_train: Sampled 2 nodes (out of 2)
\x1b[92mINFO \x1b[0m:      aggregate_train: Received 1 results and 1 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'loss': 0.8}
\x1b[92mINFO \x1b[0m:      configure_evaluate: Sampled 2 nodes (out of 2)
\x1b[92mINFO \x1b[0m:      aggregate_evaluate: Received 2 results and 0 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'loss': 0.25, 'accuracy': 0.95}
\x1b[92mINFO \x1b[0m:     \x20
\x1b[92mINFO \x1b[0m:      Strategy execution finished in 21.53s
"""


def test_flower_round_lines_give_rounds_with_their_metrics() -> None:
    parser = progress.LogProgress()
    first = parser.feed(FLOWER_LOG[:700], now=10.0)
    rest = parser.feed(FLOWER_LOG[700:], now=25.0)
    rounds = first + rest
    assert [r.round for r in rounds] == [1, 2]
    assert parser.total_rounds == 2
    assert rounds[0].train_metrics == {"loss": 1.0}
    assert rounds[0].metrics == {"loss": 0.5, "accuracy": 0.9}
    assert (rounds[1].replies, rounds[1].failures) == (1, 1)
    assert rounds[1].metrics == {"loss": 0.25, "accuracy": 0.95}
    assert parser.finish(now=30.0) == []


def test_the_last_flower_round_closes_when_the_run_ends() -> None:
    parser = progress.LogProgress()
    text = FLOWER_LOG.split("Strategy execution")[0]
    assert [r.round for r in parser.feed(text, now=1.0)] == [1]
    assert [r.round for r in parser.finish(now=2.0)] == [2]


def test_structured_events_survive_any_chunking_and_win_over_flower_lines() -> None:
    records = [RoundRecord(round=i, metrics={"accuracy": i / 10}, replies=2, seconds=1.5) for i in (1, 2)]
    text = FLOWER_LOG + "".join(f"noise\n{progress.event_line(r)}\n" for r in records)
    parser = progress.LogProgress()
    found = []
    for start in range(0, len(text), 7):  # lines split across chunks
        found += parser.feed(text[start : start + 7], now=0.0)
    found += parser.finish(now=0.0)
    assert [r.round for r in found if r.metrics.get("accuracy") in (0.1, 0.2)] == [1, 2]
    assert parser.structured
    later = parser.feed("[ROUND 3/3]\naggregate_train: Received 2 results and 0 failures\n", now=1.0)
    assert later == [] and parser.finish(now=2.0) == []


def test_run_status_sets_the_phase_and_clients() -> None:
    status = ServerStatus(total_rounds=3, clients=ClientCounts(expected=2))
    pending = progress.with_run(status, RunState("starting"), connected=0, now="t0")
    assert pending.phase == Phase.PENDING and pending.clients.connected == 0
    waiting = progress.with_run(pending, RunState("running"), connected=1, now="t1")
    assert waiting.phase == Phase.RUNNING and waiting.message == "waiting for clients: 1/2 connected"
    running = progress.with_run(waiting, RunState("running"), connected=2, now="t2")
    assert running.message == "" and running.finish_time is None
    done = progress.with_run(running, RunState("finished", "completed"), connected=2, now="t3")
    assert done.phase == Phase.SUCCEEDED and done.finish_time == "t3"


def test_a_failed_run_carries_flowers_message() -> None:
    status = ServerStatus(total_rounds=3)
    failed = progress.with_run(status, RunState("finished", "failed", "ServerApp failed with exception: boom"), 0, "t")
    assert failed.phase == Phase.FAILED and failed.message == "ServerApp failed with exception: boom"
    stopped = progress.with_run(status, RunState("finished", "stopped"), 0, "t")
    assert stopped.phase == Phase.FAILED and "stopped" in stopped.message


def test_summary_reads_like_a_log_line() -> None:
    record = RoundRecord(round=1, metrics={"loss": 0.41, "accuracy": 0.88}, replies=2, seconds=7.94)
    assert progress.summary(record) == "accuracy 0.8800, loss 0.4100 (2 replies, 0 failures, 7.9 s)"


def test_nan_and_infinite_metrics_travel_and_a_broken_event_is_skipped() -> None:
    """A diverged round is reported (NaN, Infinity), never the end of the run's progress."""
    record = RoundRecord(round=1, metrics={"loss": float("nan"), "accuracy": 0.1}, train_metrics={"loss": float("inf")})
    parser = progress.LogProgress()
    text = f"{progress.event_line(record)}\n{progress.EVENT_PREFIX}{{not a record}}\n"
    (found,) = parser.feed(text, now=0.0)
    assert math.isnan(found.metrics["loss"]) and found.train_metrics["loss"] == math.inf
    round_trip = ServerStatus.model_validate_json(ServerStatus(total_rounds=3).with_round(found).to_json(), strict=True)
    assert math.isnan(round_trip.metrics["loss"])
    flower = progress.LogProgress()
    lines = [
        "[ROUND 1/3]",
        "aggregate_evaluate: Received 2 results and 0 failures",
        "Aggregated MetricRecord: {'loss': nan, 'accuracy': inf, 'name': 'nanny'}",
        "Strategy execution finished",
    ]
    (parsed,) = flower.feed("\n".join(lines) + "\n", now=0.0)
    assert (
        math.isnan(parsed.metrics["loss"]) and parsed.metrics["accuracy"] == math.inf and "name" not in parsed.metrics
    )
