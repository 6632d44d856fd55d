"""One level-triggered reconcile, as a pure function: (job, what is observed, now) -> a plan.

The kopf handlers gather the inputs (indexes, one poll of the server) and apply the plan; every
decision lives here, so it is tested without a cluster. The plan is idempotent: applying it twice,
or after an operator restart, converges on the same objects and the same status.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeflower.core.api import CleanPolicy, FederatedTrainingJob, Phase
from kubeflower.core.server_status import RunPhase, ServerStatus
from kubeflower_operator import builders
from kubeflower_operator.observed import CONFIG_HASH, Child, Observed
from kubeflower_operator.settings import Settings

Manifest = dict[str, Any]
METRIC_DIGITS = 4
"""Significant digits of the metrics in the status: `kubectl get ftj` prints them as they are (an
ACCURACY of 0.9778, not 0.9777777777777777); the server's metrics.json keeps every digit."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    create: list[Manifest] = field(default_factory=list)
    update: list[Manifest] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of children to remove."""
    status: dict[str, Any] = field(default_factory=dict)
    """The whole desired status, wire format; the handler patches only what differs."""
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False


def with_config_hash(manifest: Manifest) -> Manifest:
    """The manifest, annotated with a hash of its spec so drift from the job's spec is visible."""
    digest = hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]
    meta = manifest["metadata"]
    meta["annotations"] = {**meta.get("annotations", {}), CONFIG_HASH: digest}
    return manifest


def desired_children(job: FederatedTrainingJob, settings: Settings) -> list[Manifest]:
    """Every child of the job as the operator creates it (before owner references)."""
    return [with_config_hash(m) for m in builders.all_children(job, settings)]


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _condition(
    previous: list[dict[str, Any]], type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else timestamp(now)
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def _round_events(previous_round: int, document: ServerStatus) -> list[Event]:
    events = []
    for record in document.history:
        if record.round > previous_round:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(record.metrics.items()))
            events.append(
                Event(
                    "Normal",
                    "RoundCompleted",
                    f"round {record.round}/{document.total_rounds} in {record.seconds:.1f}s: "
                    f"{metrics or 'no metrics'} ({record.replies} replies, {record.failures} failures)",
                )
            )
    return events


def invalid_plan(status: dict[str, Any], generation: int, message: str, now: datetime) -> Plan:
    """A spec that failed validation: Failed with the fields named, and no children at all."""
    new = {
        **status,
        "observedGeneration": generation,
        "phase": Phase.FAILED.value,
        "reason": "ValidationFailed",
        "message": message,
        "conditions": [
            _condition(status.get("conditions") or [], "Failed", True, "ValidationFailed", message, generation, now)
        ],
    }
    events = (
        []
        if status.get("reason") == "ValidationFailed" and status.get("message") == message
        else [Event("Warning", "ValidationFailed", message)]
    )
    return Plan(status=new, events=events)


def plan(
    job: FederatedTrainingJob,
    generation: int,
    status: dict[str, Any],
    observed: Observed,
    now: datetime,
    settings: Settings,
) -> Plan:
    """Everything to do for a valid job, from what is observed now."""
    spec = job.spec
    out = Plan()
    name = job.metadata.name
    children = observed.children
    server = children.get("Deployment")
    clients = children.get("StatefulSet")
    previous_conditions = status.get("conditions") or []
    new: dict[str, Any] = dict(status)
    new["observedGeneration"] = generation
    new["totalRounds"] = spec.rounds
    new["serverAddress"] = builders.superlink_address(job)
    new["selector"] = builders.label_selector(name, builders.CLIENTS)
    new.setdefault("startTime", timestamp(now))
    new.setdefault("currentRound", 0)
    restarts_before = int(status.get("serverRestarts") or 0)
    new["serverRestarts"] = max(observed.server_restarts, restarts_before)

    desired = {m["kind"]: m for m in desired_children(job, settings)}
    finished_at = status.get("completionTime")
    document = observed.poll.document

    if new["serverRestarts"] > restarts_before and not finished_at:
        out.events.append(
            Event(
                "Warning",
                "ServerRestarted",
                (
                    f"the server restarted ({new['serverRestarts']} of "
                    f"runPolicy.backoffLimit={spec.run_policy.backoff_limit} tolerated); "
                    "Flower keeps a run in the SuperLink's memory, so the run starts over from round 1"
                ),
            )
        )

    # 1. Progress from the server's status document.
    if document is not None and not finished_at:
        out.events += _round_events(int(status.get("currentRound") or 0), document)
        new["currentRound"] = document.current_round
        if document.metrics:
            new["metrics"] = {key: float(f"{value:.{METRIC_DIGITS}g}") for key, value in document.metrics.items()}

    # 2. Has the job finished (or must it fail)?
    verdict = None if finished_at else _verdict(job, new, observed, now, settings)
    if verdict is not None:
        phase, reason, message = verdict
        finished_at = timestamp(now)
        new.update(phase=phase.value, reason=reason, message=message, completionTime=finished_at)
        out.events.append(Event("Normal" if phase == Phase.SUCCEEDED else "Warning", reason, message))

    ready_clients = clients.ready_replicas if clients else 0
    desired_clients = 0 if finished_at else builders.client_replicas(job)
    new["replicas"] = ready_clients
    new["clients"] = f"{ready_clients}/{desired_clients}"
    new["round"] = f"{new['currentRound']}/{spec.rounds}"

    server_ready = bool(server and server.ready_replicas >= 1)
    if finished_at:
        _finished_children(job, children, out)
        ttl = spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and now >= parse_timestamp(finished_at) + timedelta(seconds=ttl):
            out.delete_job = True
    else:
        _running_children(desired, children, server_ready, out)
        new["phase"], new["reason"], new["message"] = _phase(job, server, clients, document)

    phase = Phase(new["phase"])
    conditions = [
        _condition(
            previous_conditions,
            "ServerReady",
            server_ready,
            "ServerReady" if server_ready else "ServerNotReady",
            "the server pod is ready" if server_ready else "waiting for the server pod",
            generation,
            now,
        ),
        _condition(
            previous_conditions,
            "ClientsReady",
            desired_clients > 0 and ready_clients >= desired_clients,
            "ClientsReady",
            f"{ready_clients}/{desired_clients} client pods ready",
            generation,
            now,
        ),
    ]
    for type_ in (Phase.SUCCEEDED, Phase.FAILED, Phase.SUSPENDED):
        if phase == type_:
            conditions.append(
                _condition(previous_conditions, type_.value, True, new["reason"], new["message"], generation, now)
            )
    new["conditions"] = conditions
    out.status = new
    return out


def _verdict(
    job: FederatedTrainingJob, status: dict[str, Any], observed: Observed, now: datetime, settings: Settings
) -> tuple[Phase, str, str] | None:
    """(phase, reason, message) when the job has just finished, else None."""
    policy = job.spec.run_policy
    document = observed.poll.document
    if document is not None and document.phase == RunPhase.SUCCEEDED:
        accuracy = document.metrics.get("accuracy")
        detail = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        return Phase.SUCCEEDED, "RunSucceeded", f"all {document.total_rounds} rounds completed{detail}"
    if document is not None and document.phase == RunPhase.FAILED:
        return Phase.FAILED, "RunFailed", document.message or "the Flower run failed"
    if status["serverRestarts"] > policy.backoff_limit:
        return (
            Phase.FAILED,
            "BackoffLimitExceeded",
            (
                f"the server restarted {status['serverRestarts']} times, "
                f"more than runPolicy.backoffLimit={policy.backoff_limit}"
            ),
        )
    poll = observed.poll
    if poll.failing_since is not None and now.timestamp() - poll.failing_since > settings.poll_failure_tolerance:
        return (
            Phase.FAILED,
            "StatusUnreachable",
            (f"the server's status endpoint failed for more than {settings.poll_failure_tolerance:g}s: {poll.error}"),
        )
    deadline = policy.active_deadline_seconds
    if deadline is not None and not policy.suspend:
        started = parse_timestamp(status["startTime"])
        if now > started + timedelta(seconds=deadline):
            return (
                Phase.FAILED,
                "DeadlineExceeded",
                f"the job ran longer than runPolicy.activeDeadlineSeconds={deadline}",
            )
    return None


def _phase(
    job: FederatedTrainingJob, server: Child | None, clients: Child | None, document: ServerStatus | None
) -> tuple[str, str, str]:
    if job.spec.run_policy.suspend:
        return Phase.SUSPENDED.value, "Suspended", "runPolicy.suspend is true: the federation is scaled to zero"
    if not server or server.ready_replicas < 1:
        return Phase.PENDING.value, "WaitingForServer", "waiting for the server pod to be ready"
    if not clients:
        return Phase.PENDING.value, "CreatingClients", "the server is ready; creating the clients"
    if document is not None and document.message:
        return Phase.RUNNING.value, "Running", document.message
    return Phase.RUNNING.value, "Running", "the federation is running"


def _running_children(desired: dict[str, Manifest], children: dict[str, Child], server_ready: bool, out: Plan) -> None:
    """Create what is missing; bring drifted children back to the spec.

    The server is never replaced mid-run (that would restart the Flower run): only its replica
    count follows `suspend`. The clients are created once the server is ready, and follow every
    spec change (replicas, env, resources).
    """
    for kind, manifest in desired.items():
        child = children.get(kind)
        if kind == "StatefulSet" and not server_ready and child is None:
            continue
        if child is None:
            out.create.append(manifest)
        elif kind == "Deployment" and child.replicas != manifest["spec"]["replicas"]:
            out.update.append({**manifest, "spec": {"replicas": manifest["spec"]["replicas"]}})
        elif kind == "StatefulSet" and child.config_hash != manifest["metadata"]["annotations"][CONFIG_HASH]:
            out.update.append(manifest)


def _finished_children(job: FederatedTrainingJob, children: dict[str, Child], out: Plan) -> None:
    policy = job.spec.run_policy.clean_policy
    doomed = {CleanPolicy.NONE: (), CleanPolicy.CLIENTS: ("StatefulSet",), CleanPolicy.ALL: tuple(children)}[policy]
    for kind in doomed:
        child = children.get(kind)
        if child is not None and not child.deleting:
            out.delete.append((kind, child.name))
