"""A checkpoint per round of the built-in ServerApp, and the resume from the latest one.

A checkpoint is two files in the output folder's `checkpoints/` (`contract.OutputFolder`):
`round-000003.pt`, the global model and the strategy's own state (FedAvgM's momentum, the
FedAdam/FedYogi/FedAdagrad moments) as tensors only, so that loading it runs no pickled code; and
`round-000003.json`, the round, the job's UID and the rounds reported so far. Each is written to a
temporary name and renamed (atomic on one file system); the JSON goes last and is what makes the
checkpoint exist, so a server killed mid-write leaves the previous checkpoint the latest. The newest
`KEEP` of the job's checkpoints are kept; everything else in the folder goes (a previous job's too).

The JSON alone is enough for the server entry point (no torch there): it shows the resumed
rounds in its status before the ServerApp starts, so the job's status never goes back a round.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeflower.core.server_status import HISTORY_LIMIT, RoundRecord

if TYPE_CHECKING:
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

LOG = logging.getLogger(__name__)
KEEP = 3
"""Checkpoints kept: the newest, and two before it in case the newest is unreadable."""
MAX_INDEX_BYTES = 4 * 1024 * 1024
"""A checkpoint's JSON is at most this big (its history is bounded by HISTORY_LIMIT rounds)."""
_NAME = re.compile(r"round-(\d{6,})\.json")
STATE_ATTRIBUTES = ("current_arrays", "momentum_vector", "m_t", "v_t")
"""The attributes in which Flower's strategies keep state from round to round: FedAvgM's
`momentum_vector` (and the `current_arrays` it steps from), FedOpt's (FedAdam, FedYogi, FedAdagrad)
moments `m_t` and `v_t`. The other strategies keep none."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint's JSON says: enough to show the rounds, and where the model is."""

    round: int
    job_uid: str
    history: list[RoundRecord]
    pending: RoundRecord | None
    """A fused round trained but not yet evaluated (its evaluation comes with the next round's replies)."""
    tensors: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "round": self.round,
                "jobUid": self.job_uid,
                "history": [r.model_dump(by_alias=True) for r in self.history],
                "pending": self.pending.model_dump(by_alias=True) if self.pending else None,
                "tensors": self.tensors.name,
            }
        )

    @classmethod
    def from_file(cls, path: Path) -> Checkpoint:
        """Raises ValueError (OSError) for what is not a readable checkpoint of ours."""
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"{path} is larger than {MAX_INDEX_BYTES} bytes")
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("round"), int):
            raise ValueError(f"{path} is not a checkpoint")
        pending = data.get("pending")
        return cls(
            round=data["round"],
            job_uid=str(data.get("jobUid", "")),
            history=[RoundRecord.model_validate(r) for r in data.get("history") or []],
            pending=RoundRecord.model_validate(pending) if pending else None,
            tensors=path.with_name(Path(str(data.get("tensors", ""))).name or "missing"),
        )


def latest(folder: Path, job_uid: str) -> Checkpoint | None:
    """The newest readable checkpoint of this job in `folder`, or None (another job's are ignored)."""
    for path in sorted(folder.glob("round-*.json"), reverse=True):
        if not _NAME.fullmatch(path.name):
            continue
        try:
            found = Checkpoint.from_file(path)
        except (OSError, ValueError) as exc:
            LOG.warning("skipping checkpoint %s: %s", path, exc)
            continue
        if found.job_uid != job_uid:
            LOG.info("checkpoint %s belongs to another job (UID %s): not resuming from it", path, found.job_uid)
            continue
        if found.tensors.is_file():
            return found
    return None


def _write(path: Path, write: Any) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.
    The temporary name is the process's own: a server pod still stopping while its replacement
    starts (a deleted pod) may write the same round."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def save(
    folder: Path,
    server_round: int,
    job_uid: str,
    arrays: ArrayRecord,
    strategy: FedAvg,
    history: list[RoundRecord],
    pending: RoundRecord | None,
) -> Checkpoint:
    """Write the checkpoint of `server_round` and prune the older ones; returns it."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"round-{server_round:06d}"
    checkpoint = Checkpoint(server_round, job_uid, list(history), pending, folder / f"{stem}.pt")
    payload = {"model": arrays.to_torch_state_dict(), "strategy": strategy_state(strategy)}
    _write(checkpoint.tensors, lambda tmp: torch.save(payload, tmp))
    _write(folder / f"{stem}.json", lambda tmp: tmp.write_text(checkpoint.to_json()))
    _prune(folder, server_round)
    return checkpoint


def load(checkpoint: Checkpoint, strategy: FedAvg) -> ArrayRecord:
    """The checkpoint's model; the strategy gets its state back. Tensors only: no code runs."""
    import torch
    from flwr.app import ArrayRecord

    payload = torch.load(checkpoint.tensors, map_location="cpu", weights_only=True)
    restore_strategy(strategy, payload["strategy"])
    return ArrayRecord(payload["model"])


def _prune(folder: Path, newest: int) -> None:
    keep = {f"round-{r:06d}{suffix}" for r in range(newest - KEEP + 1, newest + 1) for suffix in (".json", ".pt")}
    for path in folder.iterdir():
        if path.name not in keep and path.name.startswith(("round-", ".round-")):
            path.unlink(missing_ok=True)


def strategy_state(strategy: FedAvg) -> dict[str, Any]:
    """The strategy's state between rounds, as tensors: {attribute: (form, value)}."""
    import torch
    from flwr.app import ArrayRecord

    state: dict[str, Any] = {}
    for name in STATE_ATTRIBUTES:
        value = getattr(strategy, name, None)
        if value is None:
            continue
        if isinstance(value, ArrayRecord):
            state[name] = ("arrayrecord", value.to_torch_state_dict())
        elif isinstance(value, dict):
            state[name] = ("dict", {k: torch.from_numpy(v.copy()) for k, v in value.items()})
        elif isinstance(value, list):
            state[name] = ("list", [torch.from_numpy(v.copy()) for v in value])
        else:
            raise TypeError(f"{type(strategy).__name__}.{name} is a {type(value).__name__}: no way to checkpoint it")
    return state


def restore_strategy(strategy: FedAvg, state: dict[str, Any]) -> None:
    """Put `strategy_state`'s output back into a freshly built strategy."""
    from flwr.app import ArrayRecord

    for name, (form, value) in state.items():
        if name not in STATE_ATTRIBUTES:
            raise ValueError(f"checkpoint has unknown strategy state {name!r}")
        if form == "arrayrecord":
            setattr(strategy, name, ArrayRecord(value))
        elif form == "dict":
            setattr(strategy, name, {k: v.numpy() for k, v in value.items()})
        elif form == "list":
            setattr(strategy, name, [v.numpy() for v in value])
        else:
            raise ValueError(f"checkpoint has strategy state {name!r} of unknown form {form!r}")


@dataclass
class Keeper:
    """The ServerApp's checkpointing: the rounds reported so far, and a checkpoint per round."""

    folder: Path
    job_uid: str
    strategy: FedAvg
    history: list[RoundRecord] = field(default_factory=list)

    def reported(self, record: RoundRecord) -> None:
        self.history = [*self.history, record][-HISTORY_LIMIT:]

    def save(self, server_round: int, arrays: ArrayRecord, pending: RoundRecord | None) -> None:
        save(self.folder, server_round, self.job_uid, arrays, self.strategy, self.history, pending)
