"""The status document a job's server serves at `GET /status`.

The workload's server entry point writes it and the operator reads it, both through this model, so
the two sides cannot drift. JSON shape (camelCase, every field always present):

    {
      "phase": "Running",              # Pending | Running | Succeeded | Failed
      "currentRound": 2,               # last finished round, 0 before the first
      "totalRounds": 3,
      "clients": {"connected": 2, "expected": 2},
      "metrics": {"loss": 0.41, "accuracy": 0.88},   # last finished round; {} before the first
      "serverMetrics": {},             # last finished round's centralized (ServerApp-side) evaluation
      "history": [                     # one entry per finished round, oldest first, bounded
        {"round": 1, "metrics": {"loss": 1.2, "accuracy": 0.61}, "trainMetrics": {"loss": 1.5},
         "serverMetrics": {}, "nonFinite": {}, "replies": 2, "failures": 0, "seconds": 7.9}
      ],
      "message": "",                   # why it failed, or what it is waiting for
      "runId": 1234,                   # Flower's run id, once submitted
      "startTime": "2026-11-28T14:00:00Z",
      "finishTime": null,
      "resumedRound": 3,               # a restarted server resumed after this round (checkpoint); else null
      "jobUid": "..."                  # the job this document is about (metrics.json on a reused volume)
    }

Metrics come from the app (a user's app is untrusted input): every metric dictionary keeps at
most METRICS_LIMIT finite numbers with names of at most METRIC_NAME_LIMIT printable characters, and
the message at most MESSAGE_LIMIT characters, whoever builds or reads the document. A NaN or
infinite metric is not a number of the document (JSON has none) but is named in its round's
`nonFinite` (`{"loss": "NaN"}`): the user must see that a run diverged.
"""

from __future__ import annotations

import http.client
import io
import math
import socket
import time
import urllib.parse
from collections.abc import Mapping
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 1000
"""Rounds kept in `history`: enough for the curves, bounded so a long job's document stays small."""
MAX_ROUNDS = 100000
"""The most rounds a run may have (`spec.rounds`' maximum); a document claiming more is not ours."""
MAX_DOCUMENT_BYTES = 1024 * 1024
"""The most bytes a reader takes from the server: the full history of HISTORY_LIMIT rounds with a
few metrics each is about 200 KiB; more is refused, not buffered."""
HISTORY_BYTES = MAX_DOCUMENT_BYTES * 3 // 4
"""The most bytes of `history` a document keeps (the newest rounds), so that the whole document
stays within MAX_DOCUMENT_BYTES however many metrics an app reports: 1000 rounds of 3 x 16 metrics
with long names would be about 3 MB."""
METRICS_LIMIT = 16
"""Metrics kept per dictionary (a round's train, evaluate or server metrics); the first ones reported."""
METRIC_NAME_LIMIT = 40
MESSAGE_LIMIT = 1024
JOB_UID_LIMIT = 128
"""A job's UID (Kubernetes': 36 characters; local mode's: a uuid4 too)."""


def bounded_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """The metrics a document keeps: finite numbers under short printable names, at most METRICS_LIMIT."""
    kept: dict[str, float] = {}
    for name, value in values.items():
        if len(kept) == METRICS_LIMIT:
            break
        if 0 < len(name) <= METRIC_NAME_LIMIT and name.isprintable() and math.isfinite(value):
            kept[name] = value
    return kept


Metrics = Annotated[dict[str, float], AfterValidator(bounded_metrics)]

NON_FINITE_GROUPS = {"metrics": "", "train_metrics": "train ", "server_metrics": "server "}
"""A round's metric dictionaries (field, alias-free) and the prefix their non-finite names get."""


def spelled(value: float) -> str:
    """A non-finite number as JavaScript (and Python's json module) spell it: JSON itself has none."""
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def non_finite(values: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """The metrics of `values` that are NaN or infinite, by (prefixed) name: `{"loss": "NaN"}`.

    A diverged loss is news the user must see, not a reason to lose the round: the document keeps
    only finite numbers in its metrics (JSON has no NaN) and names the others here instead."""
    found: dict[str, str] = {}
    for name, value in values.items():
        if len(found) == METRICS_LIMIT:
            break
        if (
            isinstance(value, float)
            and not math.isfinite(value)
            and 0 < len(name) <= METRIC_NAME_LIMIT
            and name.isprintable()
        ):
            found[prefix + name] = spelled(value)
    return found


def _bounded_non_finite(values: dict[str, str]) -> dict[str, str]:
    kept = list(values.items())[: METRICS_LIMIT * len(NON_FINITE_GROUPS)]
    return {name: value for name, value in kept if value in ("NaN", "Infinity", "-Infinity") and name.isprintable()}


NonFinite = Annotated[
    dict[Annotated[str, StringConstraints(max_length=METRIC_NAME_LIMIT + 7)], str],
    AfterValidator(_bounded_non_finite),
]


# The one phase vocabulary: the job's (`status.phase`) and its run's (this document's). The server
# reports Pending, Running, Succeeded or Failed; Suspended is the operator's alone. (A comment, not
# a docstring: the CRD would carry a docstring as the field's description.)
class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


Count = Annotated[int, Field(ge=0, le=1_000_000)]
"""Every field is bounded: the document comes from a pod running the user's image (untrusted)."""


class ClientCounts(_Doc):
    connected: Count = 0
    expected: Count = 0


class RoundRecord(_Doc):
    round: int = Field(ge=1, le=MAX_ROUNDS)
    metrics: Metrics = Field(default_factory=dict, description="Aggregated evaluation metrics (the clients').")
    train_metrics: Metrics = Field(default_factory=dict, description="Aggregated training metrics.")
    server_metrics: Metrics = Field(default_factory=dict, description="Centralized evaluation (the ServerApp's).")
    non_finite: NonFinite = Field(
        default_factory=dict,
        description='Metrics of this round that were NaN or infinite (`{"loss": "NaN"}`), kept out of the others.',
    )
    replies: Count = 0
    failures: Count = 0
    seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _note_non_finite(cls, data: object) -> object:
        """Name the non-finite metrics of the input before the metric dictionaries drop them."""
        if not isinstance(data, dict):
            return data
        found: dict[str, str] = {}
        for group, prefix in NON_FINITE_GROUPS.items():
            values = data.get(group, data.get(to_camel(group)))
            if isinstance(values, dict):
                found.update(non_finite(values, prefix))
        if not found:
            return data
        key = "non_finite" if "non_finite" in data else "nonFinite"
        given = data.get(key)
        return {**data, key: {**found, **given} if isinstance(given, dict) else found}

    def set_metrics(self, group: str, values: Mapping[str, float]) -> None:
        """Set one metric dictionary (`metrics`, `train_metrics`, `server_metrics`) after the
        fact, as validation would have: finite metrics kept (bounded), the others named."""
        setattr(self, group, bounded_metrics(values))
        self.non_finite = _bounded_non_finite({**self.non_finite, **non_finite(values, NON_FINITE_GROUPS[group])})


Timestamp = Annotated[str, StringConstraints(max_length=40)]


class ServerStatus(_Doc):
    phase: Phase = Phase.PENDING
    current_round: int = Field(default=0, ge=0, le=MAX_ROUNDS)
    total_rounds: int = Field(default=0, ge=0, le=MAX_ROUNDS)
    clients: ClientCounts = Field(default_factory=ClientCounts)
    metrics: Metrics = Field(default_factory=dict)
    server_metrics: Metrics = Field(default_factory=dict)
    history: list[RoundRecord] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    message: Annotated[str, AfterValidator(lambda text: text[:MESSAGE_LIMIT])] = ""
    run_id: int | None = Field(default=None, ge=0, lt=2**64)
    start_time: Timestamp | None = None
    finish_time: Timestamp | None = None
    resumed_round: int | None = Field(default=None, ge=0, le=MAX_ROUNDS)
    job_uid: Annotated[str, StringConstraints(max_length=JOB_UID_LIMIT)] = ""

    @model_validator(mode="after")
    def _rounds_make_sense(self) -> ServerStatus:
        """A round past the run's total, or history out of order, is not a document of ours."""
        if self.total_rounds and self.current_round > self.total_rounds:
            raise ValueError(f"currentRound {self.current_round} is past totalRounds {self.total_rounds}")
        rounds = [r.round for r in self.history]
        if rounds != sorted(set(rounds)) or (rounds and rounds[-1] > self.current_round):
            raise ValueError("history must be the finished rounds, oldest first, none past currentRound")
        if self.total_rounds and (self.resumed_round or 0) > self.total_rounds:
            raise ValueError(f"resumedRound {self.resumed_round} is past totalRounds {self.total_rounds}")
        return self

    def with_round(self, record: RoundRecord) -> ServerStatus:
        """The document after one more finished round; history keeps the newest rounds, at most
        HISTORY_LIMIT of them in at most HISTORY_BYTES."""
        history = [*self.history, record][-HISTORY_LIMIT:]
        sizes = [len(r.model_dump_json(by_alias=True)) + 1 for r in history]
        total = sum(sizes)
        while total > HISTORY_BYTES:
            total -= sizes.pop(0)
            history.pop(0)
        return self.model_copy(
            update={
                "current_round": record.round,
                "metrics": dict(record.metrics),
                "server_metrics": dict(record.server_metrics),
                "history": history,
            }
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


_HEADROOM = 64 * 1024
"""Bytes of status line and headers allowed on top of a body's limit."""


class _Received:
    """The bytes of a whole response, as the socket http.client parses them from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def http_get(url: str, timeout: float, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The body of a 200 answer to GET `url` (plain http), read within `timeout` seconds in all.

    For URLs of the job's own network (its server's Service, loopback), served by a pod: the
    deadline covers connecting, the headers and the body together (a server that drips bytes is cut
    off), at most `limit` body bytes are taken, a redirect is an error (never followed), and no
    HTTP(S)_PROXY is used (a proxy outside the cluster cannot reach a Service). Raises OSError
    (unreachable, too slow, an HTTP error) or ValueError (too large, not http).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are read, not {url[:100]!r}")
    deadline = time.monotonic() + timeout
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    data = bytearray()
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(request.encode("ascii"))
        while not _complete(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no whole answer within {timeout:g}s")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > limit + _HEADROOM:
                raise ValueError(f"the answer is larger than {limit} bytes")
    response = http.client.HTTPResponse(_Received(bytes(data)))  # type: ignore[arg-type]
    try:
        response.begin()
        if response.status != 200:
            # 3xx included: a redirect could point the operator anywhere; it is never followed.
            raise OSError(f"HTTP {response.status}")
        body = response.read(limit + 1)
    except http.client.HTTPException as exc:
        raise OSError(f"not an HTTP answer: {type(exc).__name__}") from None
    if len(body) > limit:
        raise ValueError(f"the answer is larger than {limit} bytes")
    return body


def _complete(data: bytearray) -> bool:
    """Whether a response with a Content-Length has all its bytes (a server may keep the connection)."""
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def fetch(url: str, timeout: float) -> ServerStatus:
    """The status document at `url`, the one way every reader gets it.

    Raises OSError when it cannot be read, ValueError when it is not a status document (it comes
    from a pod: untrusted). The ValueError names the fields that failed, never the body's text.
    """
    body = http_get(url, timeout)
    try:
        return ServerStatus.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise ValueError(f"not a status document: {describe(exc)}") from None


def describe(exc: ValidationError, most: int = 3) -> str:
    """A validation error in a few words: each field and what is wrong, without the input's text."""
    found = exc.errors(include_input=False, include_url=False, include_context=False)
    words = [f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg'][:120]}" for e in found[:most]]
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return "; ".join(words) + more
