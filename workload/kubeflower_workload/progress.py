"""Round progress: how a run's log becomes the status document's rounds. Pure; no I/O.

How a round travels from the ServerApp to the server entry point: the ServerApp prints one line,
`EVENT_PREFIX` + a `RoundRecord` as JSON, and the entry point reads the run's log through the
Control API's StreamLogs. Chosen over a shared file or a POST to the entry point because the log
is the one channel every ServerApp already has wherever Flower runs it (a subprocess of the
SuperLink's SuperExec today, a separate pod with `--isolation process`), the SuperLink keeps it,
so a reader that reconnects resumes from a timestamp and loses nothing, and a user's own app gets
its progress from the same stream: Flower's standard `[ROUND i/N]` and aggregated-metrics lines.

`LogProgress` reads one or the other: the built-in app's run is read from its structured events
alone; a user's app from Flower's strategy log lines (`Strategy.start`: train, evaluate and the
centralized evaluation of `evaluate_fn`, and the errors of the clients that failed). A user's app
is untrusted input: its structured-looking lines are ignored, lines are cut at LINE_LIMIT, round
numbers have at most ROUND_DIGITS digits, and the metrics are bounded by the status document.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from kubeflower.core.server_status import MESSAGE_LIMIT, ClientCounts, Phase, RoundRecord, ServerStatus
from kubeflower_workload.control import RunState

EVENT_PREFIX = "KUBEFLOWER_ROUND "
LINE_LIMIT = 1 << 20
"""Characters of one log line that are read (a line of 10,000 metrics is about 300,000)."""
ROUND_DIGITS = 6
ERRORS_KEPT = 3
"""Distinct client errors quoted when every client of a round failed."""
_ROUND = re.compile(rf"\[ROUND (\d{{1,{ROUND_DIGITS}}})/(\d{{1,{ROUND_DIGITS}}})\]")
_RECEIVED = re.compile(r"aggregate_(train|evaluate): Received (\d+) results and (\d+) failures")
_CLIENT_ERROR = re.compile(r"> Received error in reply from node \d+: (.*)")
_CENTRALIZED = re.compile(r"Global evaluation$")
_METRICS = re.compile(r"(?:Aggregated )?MetricRecord: (\{.*\})")
_FINISHED = re.compile(r"Strategy execution finished")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FLOWER_ERROR = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>:<['\"](.*)['\"]>$")
"""How Flower writes a ClientApp's exception into an error reply: `<class 'ValueError'>:<'text'>`."""
_DECORATION = re.compile(r"[\u2500-\u259f]+")
"""Box-drawing and block characters: Flower's tree prefixes (`└──>`) and rich's panels."""


def strip_ansi(text: str) -> str:
    """Flower colours its log levels; matching needs the plain text."""
    return _ANSI.sub("", text)


def plain_message(text: str) -> str:
    """The first line of an error, as plain text for a status message: no colours, no box drawing,
    no control characters, at most MESSAGE_LIMIT characters."""
    for line in strip_ansi(text).splitlines():
        plain = "".join(c for c in _DECORATION.sub(" ", line) if c.isprintable())
        plain = " ".join(plain.split()).lstrip("> ")
        if plain:
            return plain[:MESSAGE_LIMIT]
    return ""


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
            reason = plain_message(run.details) or f"the run ended as {run.sub_status or 'unknown'}"
            update |= {"phase": Phase.FAILED, "message": reason}
        update["finish_time"] = now
    return status.model_copy(update=update)


def summary(record: RoundRecord) -> str:
    """One round in words, for logs: `loss 0.4100, accuracy 0.8800 (2 replies, 0 failures, 7.9 s)`."""
    shown = record.metrics or {f"train {k}": v for k, v in record.train_metrics.items()}
    values = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())) or "no metrics"
    broken = "".join(f", {k} {v}" for k, v in record.non_finite.items())
    return f"{values}{broken} ({record.replies} replies, {record.failures} failures, {record.seconds:.1f} s)"


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
    errors: list[str] = field(default_factory=list)
    """The first lines of the clients' errors of this round's training."""
    all_failed: bool = False
    """Every client of this round's training failed (none succeeded)."""

    def __post_init__(self) -> None:
        self.record = RoundRecord(round=self.round)


@dataclass
class LogProgress:
    """Feed it the run's log as it arrives; it returns the rounds that finished."""

    builtin: bool = False
    """The built-in app's run: read from its structured events alone. A user's app's run is read
    from Flower's log lines alone, so that it cannot forge a round's events."""
    total_rounds: int | None = None
    """From `[ROUND i/N]` lines; None until one is seen."""
    failure: str | None = None
    """Set once a round's training had no client succeed: why the run must fail (a user's app)."""
    _partial: str = ""
    _pending: _Pending | None = None

    def feed(self, text: str, now: float) -> list[RoundRecord]:
        """Consume a chunk of log (chunks may split lines); `now` times the rounds of Flower's lines."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()[-LINE_LIMIT:]
        finished: list[RoundRecord] = []
        for line in lines:
            finished.extend(self._line(strip_ansi(line[:LINE_LIMIT]), now))
        return finished

    def finish(self, now: float) -> list[RoundRecord]:
        """The run ended: the last round of Flower's lines is complete."""
        finished = self.feed("\n", now) if self._partial else []
        return finished + self._close(now)

    def _line(self, line: str, now: float) -> list[RoundRecord]:
        if self.builtin:
            if EVENT_PREFIX in line:
                try:
                    return [RoundRecord.model_validate_json(line.split(EVENT_PREFIX, 1)[1])]
                except ValueError:  # a line cut short: that round is missing, the run goes on
                    return []
            return []
        pending = self._pending
        if pending is not None and pending.all_failed and self.failure is None:
            if match := _CLIENT_ERROR.search(line):
                reason = plain_message(_FLOWER_ERROR.sub(r"\1: \2", match.group(1))) or "no reason given"
                if reason not in pending.errors and len(pending.errors) < ERRORS_KEPT:
                    pending.errors.append(reason)
                return []
            self._fail(pending)
        if match := _ROUND.search(line):
            finished = self._close(now)
            self.total_rounds = int(match.group(2))
            self._pending = _Pending(round=int(match.group(1)), started=now)
            return finished
        if pending is None:
            return []
        if match := _RECEIVED.search(line):
            pending.phase = match.group(1)
            if match.group(1) == "train":
                pending.record.replies = int(match.group(2))
                pending.record.failures = int(match.group(3))
                pending.all_failed = pending.record.replies == 0 and pending.record.failures > 0
        elif _CENTRALIZED.search(line):
            pending.phase = "server"
        elif match := _METRICS.search(line):
            group = {"train": "train_metrics", "server": "server_metrics"}.get(pending.phase, "metrics")
            pending.record.set_metrics(group, _metrics(match.group(1)))
        elif _FINISHED.search(line):
            return self._close(now)
        return []

    def _fail(self, pending: _Pending) -> None:
        failed = pending.record.failures
        reasons = "; ".join(pending.errors) or "see the clients' logs"
        self.failure = plain_message(f"round {pending.round}: all {failed} clients failed: {reasons}")

    def _close(self, now: float) -> list[RoundRecord]:
        if self._pending is None:
            return []
        pending, self._pending = self._pending, None
        if pending.all_failed and self.failure is None:
            self._fail(pending)
        pending.record.seconds = round(now - pending.started, 3)
        return [pending.record]


def _metrics(text: str) -> dict[str, float]:
    """The numbers of a logged MetricRecord (`{'loss': 0.5, 'x': nan, ...}`), non-finite ones
    included (the record names them); anything else is skipped. Python writes NaN and infinity as
    `nan` and `inf`, which `ast.literal_eval` refuses: the dictionary is read node by node."""
    try:
        tree = ast.parse(text, mode="eval").body
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return {}
    if not isinstance(tree, ast.Dict):
        return {}
    numbers: dict[str, float] = {}
    for key, node in zip(tree.keys, tree.values, strict=True):
        number = _number(node)
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and number is not None:
            numbers[key.value] = number
    return numbers


def _number(node: ast.expr) -> float | None:
    """A number literal, `nan`, `inf`, or one of them negated; None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        number = _number(node.operand)
        return None if number is None else (-number if isinstance(node.op, ast.USub) else number)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value) if abs(node.value) < 1e308 else None  # an int past float's range
    if isinstance(node, ast.Name) and node.id in ("nan", "inf"):
        return float(node.id)
    return None
