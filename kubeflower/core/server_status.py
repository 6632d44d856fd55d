"""The status document a job's server serves at `GET /status`.

The workload's server entry point writes it and the operator reads it, both through this model, so
the two sides cannot drift. JSON shape (camelCase, every field always present):

    {
      "phase": "Running",              # Pending | Running | Succeeded | Failed
      "currentRound": 2,               # last finished round, 0 before the first
      "totalRounds": 3,
      "clients": {"connected": 2, "expected": 2},
      "metrics": {"loss": 0.41, "accuracy": 0.88},   # last finished round; {} before the first
      "history": [                     # one entry per finished round, oldest first, bounded
        {"round": 1, "metrics": {"loss": 1.2, "accuracy": 0.61}, "trainMetrics": {"loss": 1.5},
         "replies": 2, "failures": 0, "seconds": 7.9}
      ],
      "message": "",                   # why it failed, or what it is waiting for
      "runId": 1234,                   # Flower's run id, once submitted
      "startTime": "2026-11-28T14:00:00Z",
      "finishTime": null
    }
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 1000
"""Rounds kept in `history`: enough for the curves, bounded so a long job's document stays small."""


class RunPhase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED)


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ClientCounts(_Doc):
    connected: int = 0
    expected: int = 0


class RoundRecord(_Doc):
    round: int
    metrics: dict[str, float] = Field(default_factory=dict, description="Aggregated evaluation metrics.")
    train_metrics: dict[str, float] = Field(default_factory=dict, description="Aggregated training metrics.")
    replies: int = 0
    failures: int = 0
    seconds: float = 0.0


class ServerStatus(_Doc):
    phase: RunPhase = RunPhase.PENDING
    current_round: int = 0
    total_rounds: int = 0
    clients: ClientCounts = Field(default_factory=ClientCounts)
    metrics: dict[str, float] = Field(default_factory=dict)
    history: list[RoundRecord] = Field(default_factory=list)
    message: str = ""
    run_id: int | None = None
    start_time: str | None = None
    finish_time: str | None = None

    def with_round(self, record: RoundRecord) -> ServerStatus:
        """The document after one more finished round; history keeps the newest HISTORY_LIMIT."""
        history = [*self.history, record][-HISTORY_LIMIT:]
        return self.model_copy(
            update={"current_round": record.round, "metrics": dict(record.metrics), "history": history}
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
