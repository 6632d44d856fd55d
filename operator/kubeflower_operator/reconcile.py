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
from typing import Any, Literal, NamedTuple

from kubeflower.core import environment
from kubeflower.core.api import CleanPolicy, Condition, FederatedTrainingJob, JobMetrics, MetricNames
from kubeflower.core.api import FederatedTrainingJobStatus as JobStatus
from kubeflower.core.server_status import Phase, ServerStatus
from kubeflower_operator import builders
from kubeflower_operator.observed import CONFIG_HASH, Child, Observed, ServerPod, manifest_key
from kubeflower_operator.settings import Settings

Manifest = dict[str, Any]
METRIC_DIGITS = 4
"""Significant digits of the metrics in the status: `kubectl get ftj` prints them as they are (an
ACCURACY of 0.9778, not 0.9777777777777777); the server's metrics.json keeps every digit."""
MAX_ROUND_EVENTS = 3
"""RoundCompleted events per reconcile: rounds beyond these (a document that jumped ahead, an
operator back from a long pause) are told in one event, so a document cannot flood the API."""


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
    status: JobStatus = field(default_factory=JobStatus)
    """The whole desired status; the handler patches only the fields that differ (`JobStatus.wire`)."""
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    stop_server: bool = False
    """The operator failed the job while its server may still run it: tell the server to stop."""
    keys_for: int | None = None
    """Before any create or update: the job's Secrets must hold keys for this many clients
    (`jobkeys.ensure`); set when the server or the clients are created or changed."""


def with_config_hash(manifest: Manifest) -> Manifest:
    """The manifest, annotated with a hash of its spec so drift from the job's spec is visible."""
    digest = hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]
    meta = manifest["metadata"]
    meta["annotations"] = {**meta.get("annotations", {}), CONFIG_HASH: digest}
    return manifest


def desired_children(job: FederatedTrainingJob, settings: Settings, partitions: int | None = None) -> list[Manifest]:
    """Every child of the job as the operator creates it (before owner references)."""
    return [with_config_hash(m) for m in builders.all_children(job, settings, partitions)]


def count_restarts(previous: JobStatus, pods: tuple[ServerPod, ...]) -> dict[str, Any]:
    """serverRestarts, serverPod and serverPodRestarts after a look at the server's pods.

    A container restart counts, and so does a pod made anew (an eviction, a lost node: the run
    starts over there too), which a pod's own restartCount never shows. `serverPod` '!' + UID marks
    a new pod as expected after that one (the operator replaced the server, or it was suspended).
    """
    total = previous.server_restarts or 0
    known, seen = previous.server_pod, previous.server_pod_restarts or 0
    if not pods:
        return {"server_restarts": total, "server_pod": known, "server_pod_restarts": seen}
    pod = max(pods, key=lambda p: p.created)
    if known is None:  # the first pod seen (or a status written before this count existed)
        total = max(total, pod.restarts)
    elif known.startswith("!"):
        total += 0 if pod.uid == known[1:] else pod.restarts
        if pod.uid == known[1:]:
            return {"server_restarts": total, "server_pod": known, "server_pod_restarts": pod.restarts}
    elif pod.uid == known:
        total += max(0, pod.restarts - seen)
    else:
        total += 1 + pod.restarts
    return {"server_restarts": total, "server_pod": pod.uid, "server_pod_restarts": pod.restarts}


def expect_new_server_pod(status: JobStatus) -> JobStatus:
    """The server's next pod is the operator's doing (a replace, a resume): not a restart."""
    known = status.server_pod
    if known is None or known.startswith("!"):
        return status
    return status.model_copy(update={"server_pod": "!" + known})


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp_of(epoch: float) -> str:
    return timestamp(datetime.fromtimestamp(epoch, UTC))


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _condition(
    previous: list[Condition], type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> Condition:
    """A metav1.Condition whose lastTransitionTime moves only when its status changes."""
    status: Literal["True", "False"] = "True" if ok else "False"
    old = next((c for c in previous if c.type == type_), None)
    since = old.last_transition_time if old and old.status == status else timestamp(now)
    return Condition(
        type=type_,
        status=status,
        observed_generation=generation,
        last_transition_time=since,
        reason=reason,
        message=message,
    )


def _round_events(previous_round: int, document: ServerStatus) -> list[Event]:
    """One event per new round, at most MAX_ROUND_EVENTS (the oldest new rounds summed up in one).

    A round with a NaN or infinite metric is still a finished round, but one the user must see: its
    event is a Warning that names the metric (`loss=NaN`)."""
    new = [record for record in document.history if record.round > previous_round]
    events = []
    if len(new) > MAX_ROUND_EVENTS:
        skipped, new = new[: 1 - MAX_ROUND_EVENTS], new[1 - MAX_ROUND_EVENTS :]
        message = f"rounds {skipped[0].round} to {skipped[-1].round}/{document.total_rounds} completed"
        broken = [record.round for record in skipped if record.non_finite]
        if broken:
            listed = ", ".join(str(r) for r in broken[:MAX_ROUND_EVENTS]) + (
                ", ..." if len(broken) > MAX_ROUND_EVENTS else ""
            )
            message += f"; NaN or infinite metrics in rounds {listed}"
        events.append(Event("Warning" if broken else "Normal", "RoundCompleted", message))
    for record in new:
        shown = record.metrics or record.server_metrics  # an app may evaluate on its server only
        values = [f"{k}={v:.4g}" for k, v in sorted(shown.items())]
        values += [f"{k}={v}" for k, v in record.non_finite.items()]
        events.append(
            Event(
                "Warning" if record.non_finite else "Normal",
                "RoundCompleted",
                f"round {record.round}/{document.total_rounds} in {record.seconds:.1f}s: "
                f"{', '.join(values) or 'no metrics'} ({record.replies} replies, {record.failures} failures)",
            )
        )
    return events


def invalid_plan(previous: JobStatus, generation: int, message: str, now: datetime) -> Plan:
    """A spec that failed validation: Failed with the fields named, and no children at all."""
    status = previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.FAILED,
            "reason": "ValidationFailed",
            "message": message,
            "conditions": [
                _condition(previous.conditions or [], "Failed", True, "ValidationFailed", message, generation, now)
            ],
        }
    )
    repeated = previous.reason == "ValidationFailed" and previous.message == message
    return Plan(status=status, events=[] if repeated else [Event("Warning", "ValidationFailed", message)])


def data_volume_problem(job: FederatedTrainingJob, modes: tuple[str, ...] | None) -> str | None:
    """Why the data claim cannot serve every client, or None. A ReadWriteOnce volume attaches to one
    node: clients on other nodes would wait forever (Multi-Attach); ReadWriteOncePod, to one pod."""
    clients = job.spec.clients
    if modes is None or clients.replicas < 2 or {"ReadOnlyMany", "ReadWriteMany"} & set(modes):
        return None
    claim = job.spec.data.claim_name if job.spec.data else None
    if "ReadWriteOncePod" in modes:
        return (
            f"spec.data.claimName: claim {claim} is ReadWriteOncePod: only one pod may mount it, and the job has "
            f"{clients.replicas} clients; use a ReadOnlyMany or ReadWriteMany claim"
        )
    if "ReadWriteOnce" in modes and "kubernetes.io/hostname" not in (clients.node_selector or {}):
        return (
            f"spec.data.claimName: claim {claim} is ReadWriteOnce: it attaches to one node, and the "
            f"{clients.replicas} clients spread over nodes; use a ReadOnlyMany or ReadWriteMany claim, or pin the "
            "clients to one node (spec.clients.nodeSelector with kubernetes.io/hostname)"
        )
    return None


def plan(
    job: FederatedTrainingJob,
    generation: int,
    previous: JobStatus,
    observed: Observed,
    now: datetime,
    settings: Settings,
) -> Plan:
    """Everything to do for a valid job, from what is observed now: progress, verdict, children,
    conditions, each its own step."""
    problem = data_volume_problem(job, observed.data_claim_modes)
    if problem is not None and previous.completion_time is None:
        return invalid_plan(previous, generation, problem, now)
    out = Plan()
    status, out.events = progress(job, generation, previous, observed, now)
    if status.completion_time is None:
        decided = verdict(job, status, observed, now, settings)
        if decided is not None:
            status = finish(status, decided, now)
            out.stop_server = decided.phase == Phase.FAILED and decided.reason != "RunFailed"
            kind = "Normal" if decided.phase == Phase.SUCCEEDED else "Warning"
            out.events.append(Event(kind, decided.reason, decided.message))
    status = children_step(job, status, observed, now, settings, out)
    server = observed.children.get("Deployment")
    server_ready = bool(server and server.ready_replicas >= 1)
    desired_clients = 0 if status.completion_time else builders.client_replicas(job)
    found = conditions(previous.conditions or [], status, server_ready, desired_clients, generation, now)
    out.status = status.model_copy(update={"conditions": found})
    return out


def progress(
    job: FederatedTrainingJob, generation: int, previous: JobStatus, observed: Observed, now: datetime
) -> tuple[JobStatus, list[Event]]:
    """The job's counters and its rounds, from the server's status document (Warning on a restart,
    one RoundCompleted per round not yet reported)."""
    spec = job.spec
    events: list[Event] = []
    restarts_before = previous.server_restarts or 0
    counted = count_restarts(previous, observed.server_pods)
    restarts = counted["server_restarts"]
    finished = previous.completion_time is not None
    update: dict[str, Any] = {
        "observed_generation": generation,
        "total_rounds": spec.rounds,
        "server_address": environment.superlink_address(job),
        "selector": builders.label_selector(job.metadata.name, environment.CLIENTS),
        "start_time": previous.start_time or timestamp(now),
        "current_round": previous.current_round or 0,
        **counted,
        "status_failing_since": None
        if observed.poll.failing_since is None
        else timestamp_of(observed.poll.failing_since),
        "results": builders.results_location(job),
    }
    if restarts > restarts_before and not finished:
        events.append(
            Event(
                "Warning",
                "ServerRestarted",
                (
                    f"the server restarted ({restarts} of "
                    f"runPolicy.backoffLimit={spec.run_policy.backoff_limit} tolerated); "
                    + (
                        "it resumes after its last checkpoint on spec.output"
                        if spec.output is not None
                        else "it resumes after its last checkpoint if its container restarted in the same pod, "
                        "else it starts over from round 1 (set spec.output to keep checkpoints across pods)"
                    )
                ),
            )
        )
    document = observed.poll.document
    if document is not None and not finished:
        if document.resumed_round is not None and document.resumed_round != previous.resumed_round:
            update["resumed_round"] = document.resumed_round
            events.append(
                Event(
                    "Normal",
                    "Resumed",
                    f"the server resumed after round {document.resumed_round}/{document.total_rounds} "
                    f"from its checkpoint in {builders.results_location(job)}",
                )
            )
        events += _round_events(previous.current_round or 0, document)
        update["current_round"] = document.current_round
        if document.metrics or document.server_metrics:
            update["metrics"] = job_metrics(job.spec.metric_names, document)
    return previous.model_copy(update=update), events


@dataclass(frozen=True)
class Refusal:
    """A child's write the API server refused: the job cannot go on until something changes."""

    kind: str
    name: str
    code: int
    message: str
    """The API server's own words (its Status message), which name the field and the rule."""


def refused(
    previous: JobStatus, status: JobStatus, refusals: list[Refusal], generation: int, now: datetime
) -> tuple[JobStatus, list[Event]]:
    """The planned status, told why the job waits: reason ChildRefused with the API server's
    message, and a ChildrenAccepted condition that is False. Waiting, not Failed: fixing the spec
    (or the quota, the policy, the other owner's object) lets the next reconcile go on. A Warning
    event when the refusal is new."""
    message = "; ".join(f"{r.kind} {r.name} refused ({r.code}): {r.message}" for r in refusals)[:1000]
    message += "; fix the job's spec (or what the message names)"
    found = [
        *(status.conditions or []),
        _condition(previous.conditions or [], "ChildrenAccepted", False, "ChildRefused", message, generation, now),
    ]
    update: dict[str, Any] = {"conditions": found}
    if status.completion_time is None:
        update |= {"phase": Phase.PENDING, "reason": "ChildRefused", "message": message}
    repeated = previous.reason == "ChildRefused" and previous.message == message
    return status.model_copy(update=update), [] if repeated else [Event("Warning", "ChildRefused", message)]


def job_metrics(names: MetricNames, document: ServerStatus) -> JobMetrics:
    """The last round's metrics for the job's status: the clients' evaluation by name, the ServerApp's
    where the name is free, and `accuracy` and `loss` as spec.metricNames picks them (bounded: the
    document keeps few metrics, with short names)."""
    merged = document.server_metrics | document.metrics
    picked = {kind: merged[name] for kind in ("accuracy", "loss") if (name := _pick(names, kind, document))}
    return JobMetrics.model_validate(
        {key: float(f"{value:.{METRIC_DIGITS}g}") for key, value in (merged | picked).items()}
    )


def _pick(names: MetricNames, kind: Literal["accuracy", "loss"], document: ServerStatus) -> str | None:
    return names.pick(kind, document.metrics) or names.pick(kind, document.server_metrics)


class Verdict(NamedTuple):
    phase: Phase
    reason: str
    message: str


def finish(status: JobStatus, decided: Verdict, now: datetime) -> JobStatus:
    return status.model_copy(
        update={
            "phase": decided.phase,
            "reason": decided.reason,
            "message": decided.message,
            "completion_time": timestamp(now),
        }
    )


def verdict(
    job: FederatedTrainingJob, status: JobStatus, observed: Observed, now: datetime, settings: Settings
) -> Verdict | None:
    """(phase, reason, message) when the job has just finished, else None."""
    policy = job.spec.run_policy
    document = observed.poll.document
    restarts = status.server_restarts or 0
    if document is not None and document.phase == Phase.SUCCEEDED:
        accuracy = job_metrics(job.spec.metric_names, document).accuracy
        detail = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        return Verdict(Phase.SUCCEEDED, "RunSucceeded", f"all {document.total_rounds} rounds completed{detail}")
    if document is not None and document.phase == Phase.FAILED:
        return Verdict(Phase.FAILED, "RunFailed", document.message or "the Flower run failed")
    if restarts > policy.backoff_limit:
        return Verdict(
            Phase.FAILED,
            "BackoffLimitExceeded",
            f"the server restarted {restarts} times, more than runPolicy.backoffLimit={policy.backoff_limit}",
        )
    poll = observed.poll
    if poll.failing_since is not None and now.timestamp() - poll.failing_since > settings.poll_failure_tolerance:
        return Verdict(
            Phase.FAILED,
            "StatusInvalid" if poll.invalid else "StatusUnreachable",
            f"the server's status endpoint failed for more than {settings.poll_failure_tolerance:g}s: {poll.error}",
        )
    deadline = policy.active_deadline_seconds
    started = parse_timestamp(status.start_time) if status.start_time else now
    if deadline is not None and not policy.suspend and now > started + timedelta(seconds=deadline):
        return Verdict(
            Phase.FAILED, "DeadlineExceeded", f"the job ran longer than runPolicy.activeDeadlineSeconds={deadline}"
        )
    return None


def children_step(
    job: FederatedTrainingJob, status: JobStatus, observed: Observed, now: datetime, settings: Settings, out: Plan
) -> JobStatus:
    """What to create, update or delete (and the job itself, once its TTL has passed); the client
    counts and, while the job runs, its phase."""
    spec = job.spec
    children = observed.children
    server, clients = children.get("Deployment"), children.get("StatefulSet")
    server_ready = bool(server and server.ready_replicas >= 1)
    finished_at = status.completion_time
    ready_clients = clients.ready_replicas if clients else 0
    desired_clients = 0 if finished_at else builders.client_replicas(job)
    # The CLIENTS column: clients the SuperLink sees connected (ready pods until the server answers).
    document = observed.poll.document
    connected = document.clients.connected if document is not None and not finished_at else ready_clients
    update: dict[str, Any] = {
        "replicas": ready_clients,
        "clients": f"{connected}/{desired_clients}",
        "round": f"{status.current_round or 0}/{spec.rounds}",
    }
    if finished_at:
        _finished_children(job, children, out)
        if "ConfigMap" not in children and spec.run_policy.clean_policy != CleanPolicy.ALL:
            out.create.append(builders.final_status_config_map(job, final_document(job, status).to_json()))
        ttl = spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and now >= parse_timestamp(finished_at) + timedelta(seconds=ttl):
            out.delete_job = True
    else:
        # The data's split is fixed when the clients are made: a scale changes the replica count,
        # not the pods' template, so no training client restarts (README, "Scaling a running job").
        kept = (status.partitions or clients.partitions) if clients is not None else None
        partitions = kept or spec.clients.replicas
        desired = {manifest_key(m): m for m in desired_children(job, settings, partitions)}
        waiting = certificate_wait(job, observed)
        if waiting is not None:  # no server pod before its certificate is issued: it could not start
            desired = {key: m for key, m in desired.items() if m["kind"] not in ("Deployment", "StatefulSet")}
        run_started = (status.current_round or 0) > 0
        replaced_server = _running_children(desired, children, server_ready, run_started, out)
        if clients is not None or any(m["kind"] == "StatefulSet" for m in out.create):
            update["partitions"] = partitions
        if replaced_server or spec.run_policy.suspend:
            status = expect_new_server_pod(status)
        touched = {m["kind"] for m in out.create + out.update}
        if spec.security.enabled and (touched & {"Deployment", "StatefulSet"} or waiting is not None):
            out.keys_for = spec.clients.replicas  # with an issuer: its Certificate too, before the server
        update["phase"], update["reason"], update["message"] = (
            (Phase.PENDING, "WaitingForCertificate", waiting)
            if waiting is not None
            else _phase(job, server, clients, observed.poll.document)
        )
    return status.model_copy(update=update)


def certificate_wait(job: FederatedTrainingJob, observed: Observed) -> str | None:
    """Why the server is not created yet (its cert-manager Certificate is not issued), or None."""
    ref, state = job.spec.security.issuer_ref, observed.certificate
    if ref is None or state is None or state.ready:
        return None
    name = builders.certificate_name(job.metadata.name)
    return (
        f"waiting for cert-manager to issue Certificate {name} (spec.security.issuerRef: {ref.kind} {ref.name}): "
        f"{state.message or 'not ready'}; the server starts once it is Ready (kubectl describe certificate {name})"
    )


def final_document(job: FederatedTrainingJob, status: JobStatus) -> ServerStatus:
    """The job's final status as a server status document (what a re-created server serves)."""
    metrics = status.metrics.model_dump(exclude_none=True) if status.metrics else {}
    return ServerStatus(
        phase=status.phase or Phase.FAILED,
        current_round=status.current_round or 0,
        total_rounds=status.total_rounds or job.spec.rounds,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        message=status.message or "",
        start_time=status.start_time,
        finish_time=status.completion_time,
        job_uid=job.metadata.uid or "",
    )


def conditions(
    previous: list[Condition],
    status: JobStatus,
    server_ready: bool,
    desired_clients: int,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """ServerReady, ClientsReady, and the phase's own condition when it is final or suspended."""
    ready_clients = status.replicas or 0
    found = [
        _condition(
            previous,
            "ServerReady",
            server_ready,
            "ServerReady" if server_ready else "ServerNotReady",
            "the server pod is ready" if server_ready else "waiting for the server pod",
            generation,
            now,
        ),
        _condition(
            previous,
            "ClientsReady",
            desired_clients > 0 and ready_clients >= desired_clients,
            "ClientsReady",
            f"{ready_clients}/{desired_clients} client pods ready",
            generation,
            now,
        ),
    ]
    if status.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.SUSPENDED):
        found.append(
            _condition(previous, status.phase.value, True, status.reason or "", status.message or "", generation, now)
        )
    return found


def _phase(
    job: FederatedTrainingJob, server: Child | None, clients: Child | None, document: ServerStatus | None
) -> tuple[Phase, str, str]:
    if job.spec.run_policy.suspend:
        return Phase.SUSPENDED, "Suspended", "runPolicy.suspend is true: the federation is scaled to zero"
    if not server or server.ready_replicas < 1:
        return Phase.PENDING, "WaitingForServer", "waiting for the server pod to be ready"
    if not clients:
        return Phase.PENDING, "CreatingClients", "the server is ready; creating the clients"
    if document is not None and document.message:
        return Phase.RUNNING, "Running", document.message
    return Phase.RUNNING, "Running", "the federation is running"


def _running_children(
    desired: dict[str, Manifest], children: dict[str, Child], server_ready: bool, run_started: bool, out: Plan
) -> bool:
    """Create what is missing; bring drifted children back to the spec. True when the server is replaced.

    A drifted child is replaced whole, guarded by the resourceVersion it was observed at (a field
    removed from the spec leaves the child too, which a merge patch would not do; a child changed
    since is not overwritten, and the next reconcile tries again). The server is replaced only
    before its run starts: while it has never been ready and no round has finished (a wrong image
    or resources can be fixed); after that only its replica count follows `suspend`, since
    replacing it would restart the Flower run (a scale changes its run config's minimum of clients:
    the running run keeps its own). The clients
    are created once the server is ready, and follow every spec change.
    """
    replaced_server = False
    for key, manifest in desired.items():
        kind = manifest["kind"]
        child = children.get(key)
        if kind == "StatefulSet" and not server_ready and child is None:
            continue
        if child is None:
            out.create.append(manifest)
            continue
        if child.deleting or child.config_hash == manifest["metadata"]["annotations"][CONFIG_HASH]:
            continue
        if kind == "Deployment" and (server_ready or run_started):
            if child.replicas != manifest["spec"]["replicas"]:
                name = {"name": manifest["metadata"]["name"]}
                out.update.append({**manifest, "metadata": name, "spec": {"replicas": manifest["spec"]["replicas"]}})
            continue
        if child.resource_version is None:
            continue  # created by us, not seen by the watch yet: the next reconcile has it
        meta = {**manifest["metadata"], "resourceVersion": child.resource_version}
        out.update.append({**manifest, "metadata": meta})
        replaced_server |= kind == "Deployment"
    return replaced_server


def _finished_children(job: FederatedTrainingJob, children: dict[str, Child], out: Plan) -> None:
    policy = job.spec.run_policy.clean_policy
    doomed = {CleanPolicy.NONE: (), CleanPolicy.CLIENTS: ("StatefulSet",), CleanPolicy.ALL: tuple(children)}[policy]
    for key in doomed:
        child = children.get(key)
        if child is not None and not child.deleting:
            out.delete.append((child.kind, child.name))
    # A finished job's server serves its status and logs until the TTL, nothing more: its Service
    # loses the Fleet API's port (a SuperLink the operator stopped, or one that stopped itself).
    service = children.get("Service")
    if service is not None and "Service" not in doomed and not service.deleting and service.resource_version:
        manifest = with_config_hash(builders.server_service(job, fleet=False))
        if service.config_hash != manifest["metadata"]["annotations"][CONFIG_HASH]:
            manifest["metadata"]["resourceVersion"] = service.resource_version
            out.update.append(manifest)
