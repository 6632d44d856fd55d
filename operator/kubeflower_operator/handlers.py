"""The kopf registrations: thin, each delegating to one module.

Run with `kopf run -m kubeflower_operator.handlers` (the image does, with `--liveness`). One
reconcile serves create, update, resume and a timer; it reads the job's children from in-memory
indexes (no API reads), polls the server's status document, plans with the pure
`reconcile.plan`, applies the plan and patches only the status fields that changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubeflower.core import api, contract, environment
from kubeflower.core.api import FederatedTrainingJobStatus
from kubeflower.core.validation import JobInvalid, parse_job
from kubeflower_operator import builders, jobkeys, leadership, metrics, reconcile
from kubeflower_operator import poll as polling
from kubeflower_operator.children import Children, NotOurs
from kubeflower_operator.observed import Child, Observed, Poll, ServerPod, server_pod, summarize
from kubeflower_operator.poll import poll, status_url
from kubeflower_operator.settings import Settings

TIMER_INTERVAL = Settings.from_env().reconcile_interval
log = logging.getLogger("kubeflower_operator")
MANAGED = {"app.kubernetes.io/managed-by": builders.MANAGED_BY}
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())
CHILD_RESOURCES = (
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("", "services"),
    ("networking.k8s.io", "networkpolicies"),
    ("", "configmaps"),  # the final status: the operator's own ConfigMaps only, never the cluster's others
)
JOB = (api.GROUP, api.VERSION, api.PLURAL)
WORKER_LIMIT = 100
"""Objects of one kind handled at once (kopf's per-object workers); see `configure`."""


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere, the kubeconfig that KUBECONFIG names now."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(
    *, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
    # Watch streams can go silent without an error; restart them on a schedule.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Events are posted on purpose (one per round, one per verdict), not for every log line.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 20
    # Memory is set by bursts, not by the number of jobs: kopf gives every object that has an event a
    # worker (a task, its queue, its API calls, each on a connection of its own: kopf's pool has no
    # limit), and keeps it 5 s after its last event. 1000 jobs created at once had ~4000 of them and
    # ~700 connections alive together, for a peak of 190 MB, which Python keeps after the burst. At
    # most WORKER_LIMIT workers per watched kind (the watch waits for a free one; a worker only
    # waits for one of the 20 handler threads anyway), each gone 0.2 s after its last event (a new
    # event makes a new one): bench/operator_scale.py, 1000 jobs at once: 131-145 MB, times within the
    # range measured before (the shared machine's load moves them more than this does). The
    # price, in a burst of more than WORKER_LIMIT objects: a worker that awaits its own patch's
    # event behind the waiting watch waits at most persistence.consistency_timeout (5 s).
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = 0.2
    # The children's watches ask the API server for the operator's own objects only (a label
    # selector on the watch request), not every Deployment, StatefulSet, Service, NetworkPolicy,
    # ConfigMap and server pod of the cluster, filtered in memory.
    for group, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group, plural] = MANAGED_SELECTOR
    settings.watching.label_selectors["", "pods"] = (
        f"{MANAGED_SELECTOR},{contract.COMPONENT_LABEL}={environment.SERVER}"
    )
    # A job is deleted from inside its own timer (ttlSecondsAfterFinished), or while one runs: kopf
    # then waits for the timer to exit before it removes its finalizer, and checks again only after
    # cancellation_polling (60 s by default) unless the timer exits within a few event-loop cycles.
    settings.background.cancellation_polling = 1.0
    # kopf logs every timer run at INFO ("Timer ... succeeded"): thousands of lines an hour that an
    # on-call engineer never needs. Our own log lines (kubeflower_operator) say what was done.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # `--liveness` serves /healthz with aiohttp, which logs every request: the kubelet's liveness
    # and readiness probes (deploy/deployment.yaml) would add a line every few seconds.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG when it is imported; read it now, as kopf does.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    memo.settings = Settings.from_env()
    memo.metrics = metrics.Metrics()
    memo.leadership = None
    memo.children = Children(ApiClient(), on_error=memo.metrics.api_error, before_write=lambda: _fence(memo))
    memo.metrics_server = metrics.serve(memo.metrics, memo.settings.metrics_port)
    logger.info("kubeflower operator started: %s", memo.settings)


@kopf.on.startup()
async def lead(memo: kopf.Memo, **_: Any) -> None:
    """With leader election, wait here (before kopf watches anything) until this process holds the
    Lease; then renew it in the background. Async: kopf runs it in its loop, the main thread."""
    settings: Settings = memo.settings
    if not settings.leader_election:
        return
    namespace = settings.lease_namespace or leadership.lease_namespace()
    memo.leadership = leadership.Leadership(ApiClient(), namespace, leadership.LEASE_NAME)
    await memo.leadership.acquire()
    memo.leadership.start_renewing()
    memo.leadership.exit_on_late_wake()


def _fence(memo: kopf.Memo) -> None:
    """Before every write of ours: a leader past its renew deadline stops the process here."""
    if memo.leadership is not None:
        memo.leadership.check()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if memo.leadership is not None:
        memo.leadership.release()
    memo.metrics_server.shutdown()
    memo.metrics_server.server_close()


@kopf.on.event(*JOB)
def count_job(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Jobs by phase, from every watch event of a job: what the API says, deletions included."""
    key = (body["metadata"].get("namespace", ""), body["metadata"]["name"])
    if type == "DELETED":
        memo.metrics.job_gone(key)
    else:
        memo.metrics.job_seen(key, (body.get("status") or {}).get("phase"))


def _job_key(body: kopf.Body) -> tuple[str, str] | None:
    job = body.get("metadata", {}).get("labels", {}).get(contract.JOB_LABEL)
    return (body["metadata"].get("namespace", ""), job) if job else None


def _child_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Child]:
    key = _job_key(body)
    return {key: summarize(body)} if key else {}


kopf.index("apps", "v1", "deployments", labels=MANAGED, id="deployments")(_child_index)
kopf.index("apps", "v1", "statefulsets", labels=MANAGED, id="statefulsets")(_child_index)
kopf.index("", "v1", "services", labels=MANAGED, id="services")(_child_index)
kopf.index("", "v1", "configmaps", labels=MANAGED, id="configmaps")(_child_index)
kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED, id="networkpolicies")(_child_index)


@kopf.index("", "v1", "pods", labels={**MANAGED, contract.COMPONENT_LABEL: environment.SERVER})
def server_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ServerPod]:
    key = _job_key(body)
    if not key or body["metadata"].get("deletionTimestamp"):
        return {}  # a pod on its way out is no longer the job's server
    return {key: server_pod(body)}


def _observe(
    key: tuple[str, str],
    indexes: dict[str, kopf.Index[tuple[str, str], Any]],
    expected: dict[str, Child],
    poll_result: Poll,
) -> Observed:
    found: dict[str, Child] = {}
    for index_name in CHILD_INDEXES:
        for child in indexes[index_name].get(key, []):
            found[child.key] = child
    for kind in set(expected) & set(found):
        del expected[kind]  # the watch has caught up with what we created
    return Observed(
        children={**expected, **found},
        server_pods=tuple(indexes["server_pods"].get(key, [])),
        poll=poll_result,
    )


CHILD_INDEXES = ("deployments", "statefulsets", "services", "networkpolicies", "configmaps")


@kopf.on.resume(*JOB)
@kopf.on.create(*JOB)
@kopf.on.update(*JOB)
@kopf.timer(*JOB, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL, id="reconcile-timer")
def reconcile_job(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **indexes: Any) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return  # Going away: the garbage collector removes the children through their owner references.
    # Handlers and the timer of one job run in different threads: one reconcile at a time.
    with memo.setdefault("lock", threading.Lock()):
        started, failed = time.monotonic(), True
        try:
            # Our last status patch is applied after we return; a body still at the version we planned
            # from has not seen it yet, so plan from what we wrote, not from the stale body.
            seen_version, written = memo.get("written", (None, None))
            current = written if seen_version == meta["resourceVersion"] else dict(status)
            _fence(memo)
            typed = _typed_status(current, meta)
            plan = _plan(body, typed, memo, indexes)
            refusals = _apply(plan, body, memo)
            if refusals:
                generation = int(meta.get("generation", 1))
                plan.status, events = reconcile.refused(typed, plan.status, refusals, generation, datetime.now(UTC))
                _post(body, memo, events)
            desired = plan.status.wire()
            memo.written = (meta["resourceVersion"], desired)
            # kopf sends the status patch after we return: the last moment we can fence it.
            _fence(memo)
            failed = False
        finally:
            # kopf passes `reason` (create, update, resume) to change handlers, nothing to timers.
            trigger = str(indexes.get("reason") or "timer")
            memo.metrics.reconciled((meta["namespace"], meta["name"]), trigger, time.monotonic() - started, failed)
    for key, value in desired.items():
        if current.get(key) != value:
            patch.status[key] = value
    for gone in set(current) - set(desired):
        patch.status[gone] = None


def _post(body: kopf.Body, memo: kopf.Memo, events: list[reconcile.Event]) -> None:
    job = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    for event in events:
        _fence(memo)
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        (log.warning if event.type == "Warning" else log.info)("%s: %s: %s", job, event.reason, event.message)


def _typed_status(current: dict[str, Any], meta: Any) -> FederatedTrainingJobStatus:
    """The status as last written; one broken by hand (it is writable) is planned afresh."""
    try:
        return FederatedTrainingJobStatus.model_validate(current)
    except ValidationError as exc:
        log.warning("%s/%s: its status is not ours (%s); planning it afresh", meta["namespace"], meta["name"], exc)
        return FederatedTrainingJobStatus()


def _plan(
    body: kopf.Body, current: FederatedTrainingJobStatus, memo: kopf.Memo, indexes: dict[str, Any]
) -> reconcile.Plan:
    meta = body["metadata"]
    now = datetime.now(UTC)
    generation = int(meta.get("generation", 1))
    try:
        job = parse_job(dict(body))
    except JobInvalid as exc:
        return reconcile.invalid_plan(current, generation, str(exc), now)
    settings: Settings = memo.settings
    key = (meta["namespace"], meta["name"])
    expected: dict[str, Child] = memo.setdefault("expected", {})
    server = _observe(key, indexes, expected, Poll()).children.get("Deployment")
    polled = Poll()
    if server and server.ready_replicas >= 1 and current.completion_time is None:
        url = status_url(settings, meta["name"], meta["namespace"])
        since = current.status_failing_since
        since_epoch = reconcile.parse_timestamp(since).timestamp() if since else None
        polled = poll(url, since_epoch, settings.poll_timeout, job.spec.rounds)
        memo.metrics.polled(key, failed=polled.error is not None)
    observed = _observe(key, indexes, expected, polled)
    claim = job.spec.data.claim_name if job.spec.data else None
    if claim and "StatefulSet" not in observed.children and current.completion_time is None:
        modes = memo.children.claim_access_modes(meta["namespace"], claim)  # one read, until the clients exist
        observed = dataclasses.replace(observed, data_claim_modes=None if modes is None else tuple(modes))
    if job.spec.security.issuer_ref and "Deployment" not in observed.children and current.completion_time is None:
        name = builders.certificate_name(meta["name"])  # one read a reconcile, until the server exists
        observed = dataclasses.replace(observed, certificate=memo.children.certificate_state(meta["namespace"], name))
    return reconcile.plan(job, generation, current, observed, now, settings)


REFUSED = {400, 403, 404, 409, 422}
"""Answers to a child's write that no retry of the same write fixes: the spec, a quota, an admission
policy, or another owner's object must change first. They become the job's reason, not kopf's
endless retries (a 409 on a replace is a stale resourceVersion: the next reconcile plans afresh)."""


def _refusal(kind: str, name: str, exc: ApiException) -> reconcile.Refusal:
    try:
        said = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        said = str(exc.reason)
    return reconcile.Refusal(kind, name, int(exc.status or 0), said)


def _apply(plan: reconcile.Plan, body: kopf.Body, memo: kopf.Memo) -> list[reconcile.Refusal]:
    """Apply the plan's writes and post its events; the writes the API server refused."""
    # Logged through a plain logger: kopf's per-object logger would turn warnings into Events too,
    # and the plan's events are posted explicitly, once each.
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    job = f"{namespace}/{name}"
    children: Children = memo.children
    refusals: list[reconcile.Refusal] = []
    if plan.keys_for is not None:  # before the pods that mount them
        try:
            jobkeys.ensure(children, parse_job(dict(body)), body, plan.keys_for)
        except NotOurs as exc:
            refusals.append(reconcile.Refusal(exc.kind, exc.name, 409, str(exc)))
        except jobkeys.NoCertificateApi as exc:
            refusals.append(reconcile.Refusal(exc.kind, exc.name, 404, str(exc)))
        except ApiException as exc:
            if exc.status not in REFUSED:
                raise
            refusals.append(_refusal("Secret", jobkeys.secret_names(body["metadata"]["name"]), exc))
        if refusals:  # no pod is made or changed without the keys it mounts
            _post(body, memo, plan.events)
            return refusals
    for manifest in plan.create:
        kopf.adopt(manifest, owner=body)
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        try:
            children.create(namespace, manifest)
        except NotOurs as exc:
            refusals.append(reconcile.Refusal(kind, child, 409, str(exc)))
            continue
        except ApiException as exc:
            if exc.status not in REFUSED:
                raise
            refusals.append(_refusal(kind, child, exc))
            continue
        memo.expected[summarize(manifest).key] = summarize(manifest)
        log.info("%s: created %s %s", job, kind, child)
    for manifest in plan.update:
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        try:
            if "resourceVersion" in manifest["metadata"]:
                kopf.adopt(manifest, owner=body)
                children.replace(namespace, manifest)
            else:
                children.patch(namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                log.info("%s: %s %s changed since it was observed; planning again", job, kind, child)
                continue
            if exc.status not in REFUSED:
                raise
            refusals.append(_refusal(kind, child, exc))
            continue
        log.info("%s: updated %s %s to the job's spec", job, kind, child)
    for kind, child_name in plan.delete:
        children.delete(namespace, kind, child_name)
        log.info("%s: deleted %s %s (runPolicy.cleanPolicy)", job, kind, child_name)
    _post(body, memo, plan.events)
    if plan.stop_server:
        settings: Settings = memo.settings
        url = polling.stop_url(status_url(settings, name, namespace))
        try:
            answer = polling.stop(url, str(body["metadata"].get("uid", "")), settings.poll_timeout)
            log.info("%s: asked the server to stop its run: HTTP %d", job, answer)
        except OSError as exc:  # a dead server stops nothing; its Service loses the Fleet port anyway
            log.info("%s: the server could not be told to stop: %s", job, exc)
    if plan.delete_job:
        log.info("%s: deleting the job: ttlSecondsAfterFinished has passed", job)
        children.delete_job(namespace, name)
    return refusals
