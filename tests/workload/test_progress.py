"""Turning a run's log and Flower's run status into the status document (pure)."""

from __future__ import annotations

from kubeflower.core.server_status import (
    MESSAGE_LIMIT,
    METRIC_NAME_LIMIT,
    METRICS_LIMIT,
    ClientCounts,
    Phase,
    RoundRecord,
    ServerStatus,
    bounded_metrics,
)
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


def test_the_built_in_apps_structured_events_survive_any_chunking_and_alone_count() -> None:
    records = [RoundRecord(round=i, metrics={"accuracy": i / 10}, replies=2, seconds=1.5) for i in (1, 2)]
    text = FLOWER_LOG + "".join(f"noise\n{progress.event_line(r)}\n" for r in records)
    parser = progress.LogProgress(builtin=True)
    found = []
    for start in range(0, len(text), 7):  # lines split across chunks
        found += parser.feed(text[start : start + 7], now=0.0)
    found += parser.finish(now=0.0)
    assert found == records  # Flower's own lines are not read for the built-in app


def test_a_users_app_cannot_forge_the_built_in_apps_events() -> None:
    forged = RoundRecord(round=99999, metrics={"accuracy": 1.0}, replies=999)
    parser = progress.LogProgress()
    found = parser.feed(f"{progress.event_line(forged)}\n" + FLOWER_LOG, now=0.0) + parser.finish(now=1.0)
    assert [r.round for r in found] == [1, 2] and all(r.replies <= 2 for r in found)
    # A round number of more than ROUND_DIGITS digits is no round either.
    assert parser.feed("[ROUND 12345678/12345678]\n", now=2.0) == [] and parser.total_rounds == 2


# The same from an app with a centralized `evaluate_fn` (Flower's templates), as logged.
CENTRALIZED_LOG = """\x1b[92mINFO \x1b[0m:      Initial global evaluation results: {'accuracy': 0.0, 'loss': 1.0}
\x1b[92mINFO \x1b[0m:      [ROUND 1/1]
\x1b[92mINFO \x1b[0m:      aggregate_train: Received 2 results and 0 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'train_loss': 1.0}
\x1b[92mINFO \x1b[0m:      aggregate_evaluate: Received 2 results and 0 failures
\x1b[92mINFO \x1b[0m:      \t└──> Aggregated MetricRecord: {'eval_loss': 0.18, 'eval_acc': 0.05}
\x1b[92mINFO \x1b[0m:      Global evaluation
\x1b[92mINFO \x1b[0m:      \t└──> MetricRecord: {'accuracy': 0.1, 'loss': 0.09}
\x1b[92mINFO \x1b[0m:     \x20
\x1b[92mINFO \x1b[0m:      Strategy execution finished in 18.94s
"""


def test_every_metric_by_its_name_with_the_centralized_evaluation() -> None:
    parser = progress.LogProgress()
    (record,) = parser.feed(CENTRALIZED_LOG, now=0.0)
    assert record.train_metrics == {"train_loss": 1.0}
    assert record.metrics == {"eval_loss": 0.18, "eval_acc": 0.05}
    assert record.server_metrics == {"accuracy": 0.1, "loss": 0.09}
    status = ServerStatus(total_rounds=1).with_round(record)
    assert status.server_metrics == {"accuracy": 0.1, "loss": 0.09}


def test_ten_thousand_metrics_and_an_endless_line_stay_bounded() -> None:
    many = {f"metric_{i:05d}": float(i) for i in range(10000)}
    text = f"[ROUND 1/1]\naggregate_train: Received 2 results and 0 failures\nAggregated MetricRecord: {many}\n"
    parser = progress.LogProgress()
    assert parser.feed(text, now=0.0) == []
    parser.feed("x" * (3 * progress.LINE_LIMIT), now=0.0)  # no newline: kept at LINE_LIMIT
    assert len(parser._partial) == progress.LINE_LIMIT
    (record,) = parser.finish(now=1.0)
    assert list(record.train_metrics) == [f"metric_{i:05d}" for i in range(METRICS_LIMIT)]
    long_names = {"n" * (METRIC_NAME_LIMIT + 1): 1.0, "bad\x1bname": 2.0, "nan": float("nan"), "ok": 3.0}
    assert bounded_metrics(long_names) == {"ok": 3.0}
    assert len(ServerStatus(message="m" * 5000).message) == MESSAGE_LIMIT


FAILED_ROUND_LOG = """INFO :      [ROUND 1/3]
INFO :      aggregate_train: Received 0 results and 2 failures
INFO :      \t> Received error in reply from node 1: <class 'RuntimeError'>:<'no data [partition 0]'>
INFO :      \t> Received error in reply from node 2: <class 'RuntimeError'>:<'no data [partition 0]'>
INFO :      configure_evaluate: Sampled 2 nodes (out of 2)
"""


def test_a_round_in_which_every_client_failed_is_a_failure_with_the_clients_error() -> None:
    parser = progress.LogProgress()
    parser.feed(FAILED_ROUND_LOG[:150], now=0.0)
    assert parser.failure is None  # not before the clients' errors are read
    parser.feed(FAILED_ROUND_LOG[150:], now=0.0)
    assert parser.failure == "round 1: all 2 clients failed: RuntimeError: no data [partition 0]"
    some = progress.LogProgress()
    some.feed(FLOWER_LOG, now=0.0)  # round 2: 1 result, 1 failure: not a failed round
    assert some.failure is None


def test_a_plain_message_is_the_first_line_without_decoration() -> None:
    text = "\x1b[91m╭─ Error ─╮\x1b[0m\n│ model [resnet] wants [3, 32, 32] │\n╰──────╯\nsecond line"
    assert progress.plain_message(text) == "Error"
    assert progress.plain_message("  \n│ model [resnet] wants [3, 32, 32] │") == "model [resnet] wants [3, 32, 32]"
    assert progress.plain_message("└──> boom\x07") == "boom"


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


NAN_LOG = """INFO :      [ROUND 1/2]
INFO :      aggregate_train: Received 2 results and 0 failures
INFO :      \t└──> Aggregated MetricRecord: {'loss': inf, 'lr': 0.1}
INFO :      aggregate_evaluate: Received 2 results and 0 failures
INFO :      \t└──> Aggregated MetricRecord: {'loss': nan, 'accuracy': 0.1, 'margin': -inf}
INFO :      [ROUND 2/2]
"""


def test_nan_and_infinite_metrics_are_named_and_the_round_and_its_other_metrics_kept() -> None:
    """A diverged run is news, not a reason to lose the round: Python logs `nan` and `inf`, which
    a literal reader refuses (the whole dictionary was lost); the document names them instead."""
    (record,) = progress.LogProgress().feed(NAN_LOG, now=0.0)
    assert record.train_metrics == {"lr": 0.1} and record.metrics == {"accuracy": 0.1}
    assert record.non_finite == {"train loss": "Infinity", "loss": "NaN", "margin": "-Infinity"}
    assert "loss NaN" in progress.summary(record)
    # The document stays JSON (no NaN token) and the operator reads the names back.
    document = ServerStatus(phase=Phase.RUNNING, total_rounds=2).with_round(record).to_json()
    assert "NaN," not in document and "Infinity," not in document
    assert ServerStatus.model_validate_json(document).history[0].non_finite == record.non_finite


def test_the_built_in_apps_round_with_a_nan_metric_survives_its_event_line() -> None:
    """The built-in app sets a round's metrics after the fact (`set_metrics`): a NaN was written as
    `null` into its event line, which the server refused, and the round was lost."""
    record = RoundRecord(round=1, replies=2)
    record.set_metrics("metrics", {"loss": float("nan"), "accuracy": 0.5})
    parser = progress.LogProgress(builtin=True)
    (read,) = parser.feed(progress.event_line(record) + "\n", now=0.0)
    assert read.metrics == {"accuracy": 0.5} and read.non_finite == {"loss": "NaN"} and read.replies == 2


def test_a_hostile_documents_non_finite_names_are_bounded() -> None:
    raw = '{"round": 1, "metrics": {"loss": NaN}, "nonFinite": {"x": "not a number", "y": "Infinity"}}'
    assert RoundRecord.model_validate_json(raw).non_finite == {"loss": "NaN", "y": "Infinity"}
    many = {f"m{i}": float("nan") for i in range(100)}
    assert len(RoundRecord(round=1, metrics=many, train_metrics=many).non_finite) == 2 * METRICS_LIMIT
