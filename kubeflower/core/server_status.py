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
         "serverMetrics": {}, "replies": 2, "failures": 0, "seconds": 7.9}
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
the message at most MESSAGE_LIMIT characters, whoever builds or reads the document.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 1000
"""Rounds kept in `history`: enough for the curves, bounded so a long job's document stays small."""
METRICS_LIMIT = 16
"""Metrics kept per dictionary (a round's train, evaluate or server metrics); the first ones reported."""
METRIC_NAME_LIMIT = 40
MESSAGE_LIMIT = 1024


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


class ClientCounts(_Doc):
    connected: int = 0
    expected: int = 0


class RoundRecord(_Doc):
    round: int
    metrics: Metrics = Field(default_factory=dict, description="Aggregated evaluation metrics (the clients').")
    train_metrics: Metrics = Field(default_factory=dict, description="Aggregated training metrics.")
    server_metrics: Metrics = Field(default_factory=dict, description="Centralized evaluation (the ServerApp's).")
    replies: int = 0
    failures: int = 0
    seconds: float = 0.0


class ServerStatus(_Doc):
    phase: Phase = Phase.PENDING
    current_round: int = 0
    total_rounds: int = 0
    clients: ClientCounts = Field(default_factory=ClientCounts)
    metrics: Metrics = Field(default_factory=dict)
    server_metrics: Metrics = Field(default_factory=dict)
    history: list[RoundRecord] = Field(default_factory=list)
    message: Annotated[str, AfterValidator(lambda text: text[:MESSAGE_LIMIT])] = ""
    run_id: int | None = None
    start_time: str | None = None
    finish_time: str | None = None
    resumed_round: int | None = None
    job_uid: str = ""

    def with_round(self, record: RoundRecord) -> ServerStatus:
        """The document after one more finished round; history keeps the newest HISTORY_LIMIT."""
        history = [*self.history, record][-HISTORY_LIMIT:]
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


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float) -> bytes:
    """GET a URL of the job's own network (its server's Service, loopback); raises OSError.

    Never through HTTP(S)_PROXY: a proxy outside the cluster cannot reach a Service or loopback.
    """
    with _DIRECT.open(url, timeout=timeout) as response:
        return bytes(response.read())


def fetch(url: str, timeout: float) -> ServerStatus:
    """The status document at `url`, the one way every reader gets it.

    Raises OSError when it cannot be read, ValueError when it is not a status document (it comes
    from a pod: untrusted).
    """
    return ServerStatus.model_validate_json(http_get(url, timeout))
