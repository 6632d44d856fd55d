"""Round progress: how a run's log becomes the status document's rounds. Pure; no I/O.

How a round travels from the ServerApp to the server entry point: the ServerApp prints one line,
`EVENT_PREFIX` + a `RoundRecord` as JSON, and the entry point reads the run's log through the
Control API's StreamLogs. Chosen over a shared file or a POST to the entry point because the log
is the one channel every ServerApp already has wherever Flower runs it (a subprocess of the
SuperLink's SuperExec today, a separate pod with `--isolation process`), the SuperLink keeps it,
so a reader that reconnects resumes from a timestamp and loses nothing, and a user's own app gets
its progress from the same stream: Flower's standard `[ROUND i/N]` and aggregated-metrics lines.

`LogProgress` accepts both: a run that prints structured events is read from those alone (the
built-in app); otherwise Flower's strategy log lines are parsed (a user's app).
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass, field

from kubeflower.core.server_status import ClientCounts, Phase, RoundRecord, ServerStatus, bounded_message
from kubeflower_workload.control import RunState

EVENT_PREFIX = "KUBEFLOWER_ROUND "
_ROUND = re.compile(r"\[ROUND (\d+)/(\d+)\]")
_RECEIVED = re.compile(r"aggregate_(train|evaluate): Received (\d+) results and (\d+) failures")
_AGGREGATED = re.compile(r"Aggregated MetricRecord: (\{.*\})")
_FINISHED = re.compile(r"Strategy execution finished")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NAN = re.compile(r"(?<![\w'\"])nan(?![\w'\"])")
_INF = re.compile(r"(?<![\w'\"])inf(?![\w'\"])")
LOG = logging.getLogger(__name__)


def strip_ansi(text: str) -> str:
    """Flower colours its log levels; matching needs the plain text."""
    return _ANSI.sub("", text)


def with_run(status: ServerStatus, run: RunState, connected: int, now: str) -> ServerStatus:
    """The status after a look at the run's Flower status and the SuperNodes connected."""
    expected = status.clients.expected
    update: dict[str, object] = {"clients": ClientCounts(connected=connected, expected=expected)}
    if run.status in ("pending", "starting"):
        update |= {"phase": Phase.PENDING, "message": "run submitted; waiting for the ServerApp to start"}
    elif run.status == "running":
        waiting = f"waiting for clients: {connected}/{expected} connected" if connected < expected else ""
        update |= {"phase": Phase.RUNNING, "message": waiting}
    elif run.finished:
        if run.sub_status == "completed":
            update |= {"phase": Phase.SUCCEEDED, "message": ""}
        else:
            reason = run.details or f"the run ended as {run.sub_status or 'unknown'}"
            update |= {"phase": Phase.FAILED, "message": bounded_message(reason)}
        update["finish_time"] = now
    return status.model_copy(update=update)


def summary(record: RoundRecord) -> str:
    """One round in words, for logs: `loss 0.4100, accuracy 0.8800 (2 replies, 0 failures, 7.9 s)`."""
    shown = record.metrics or {f"train {k}": v for k, v in record.train_metrics.items()}
    values = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())) or "no metrics"
    return f"{values} ({record.replies} replies, {record.failures} failures, {record.seconds:.1f} s)"


def event_line(record: RoundRecord) -> str:
    """The log line that carries one finished round."""
    return EVENT_PREFIX + record.model_dump_json(by_alias=True)


@dataclass
class _Pending:
    """A round seen in Flower's log lines, not finished yet."""

    round: int
    started: float
    phase: str = "train"
    record: RoundRecord = field(init=False)

    def __post_init__(self) -> None:
        self.record = RoundRecord(round=self.round)


@dataclass
class LogProgress:
    """Feed it the run's log as it arrives; it returns the rounds that finished."""

    structured: bool = False
    """Set once a structured event was seen: Flower's own lines are ignored from then on."""
    total_rounds: int | None = None
    """From `[ROUND i/N]` lines; None until one is seen."""
    _partial: str = ""
    _pending: _Pending | None = None

    def feed(self, text: str, now: float) -> list[RoundRecord]:
        """Consume a chunk of log (chunks may split lines); `now` times the rounds of Flower's lines."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        finished: list[RoundRecord] = []
        for line in lines:
            finished.extend(self._line(strip_ansi(line), now))
        return finished

    def finish(self, now: float) -> list[RoundRecord]:
        """The run ended: the last round of Flower's lines is complete."""
        finished = self.feed("\n", now) if self._partial else []
        return finished + self._close(now)

    def _line(self, line: str, now: float) -> list[RoundRecord]:
        if EVENT_PREFIX in line:
            self.structured = True
            self._pending = None
            try:
                return [RoundRecord.model_validate_json(line.split(EVENT_PREFIX, 1)[1])]
            except ValueError as exc:  # one bad line costs its round's record, not the progress
                LOG.warning("a round event that is not a round record was skipped: %s", exc.__class__.__name__)
                return []
        if self.structured:
            return []
        if match := _ROUND.search(line):
            finished = self._close(now)
            self.total_rounds = int(match.group(2))
            self._pending = _Pending(round=int(match.group(1)), started=now)
            return finished
        if self._pending is None:
            return []
        if match := _RECEIVED.search(line):
            self._pending.phase = match.group(1)
            if match.group(1) == "train":
                self._pending.record.replies = int(match.group(2))
                self._pending.record.failures = int(match.group(3))
        elif match := _AGGREGATED.search(line):
            metrics = _metrics(match.group(1))
            if self._pending.phase == "train":
                self._pending.record.train_metrics = metrics
            else:
                self._pending.record.metrics = metrics
        elif _FINISHED.search(line):
            return self._close(now)
        return []

    def _close(self, now: float) -> list[RoundRecord]:
        if self._pending is None:
            return []
        pending, self._pending = self._pending, None
        pending.record.seconds = round(now - pending.started, 3)
        return [pending.record]


def _metrics(text: str) -> dict[str, float]:
    """The numbers of a logged MetricRecord (`{'loss': 0.5, ...}`), NaN and infinities included (a
    diverged training is reported as such); anything else is skipped."""
    text = _INF.sub("1e999", _NAN.sub("'nan'", text))
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if (isinstance(v, int | float) and not isinstance(v, bool)) or v == "nan"
    }
