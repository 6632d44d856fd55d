"""The kopf registrations: thin, each delegating to one module.

Run with `kopf run -m kubeflower.operator.handlers` (the image does, with `--liveness`). One
reconcile serves create, update, resume and a timer; it reads the job's children from in-memory
indexes (no API reads), polls the server's status document, plans with the pure
`reconcile.plan`, applies the plan and patches only the status fields that changed.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config

from kubeflower import api
from kubeflower.operator import builders, reconcile
from kubeflower.operator.children import Children
from kubeflower.operator.observed import Child, Observed, Poll, restart_count, summarize
from kubeflower.operator.poll import poll, status_url
from kubeflower.operator.settings import Settings
from kubeflower.validation import JobInvalid, parse_job

TIMER_INTERVAL = Settings.from_env().reconcile_interval
log = logging.getLogger("kubeflower.operator")
MANAGED = {"app.kubernetes.io/managed-by": builders.MANAGED_BY}
JOB = (api.GROUP, api.VERSION, api.PLURAL)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere, the kubeconfig that KUBECONFIG names now."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
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
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG when it is imported; read it now, as kopf does.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    memo.settings = Settings.from_env()
    memo.children = Children(client.ApiClient())
    logger.info("kubeflower operator started: %s", memo.settings)


def _job_key(body: kopf.Body) -> tuple[str, str] | None:
    job = body.get("metadata", {}).get("labels", {}).get(builders.JOB_LABEL)
    return (body["metadata"].get("namespace", ""), job) if job else None


def _child_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Child]:
    key = _job_key(body)
    return {key: summarize(body)} if key else {}


kopf.index("apps", "v1", "deployments", labels=MANAGED, id="deployments")(_child_index)
kopf.index("apps", "v1", "statefulsets", labels=MANAGED, id="statefulsets")(_child_index)
kopf.index("", "v1", "services", labels=MANAGED, id="services")(_child_index)
kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED, id="networkpolicies")(_child_index)


@kopf.index("", "v1", "pods", labels={**MANAGED, builders.COMPONENT_LABEL: builders.SERVER})
def server_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], int]:
    key = _job_key(body)
    return {key: restart_count(body)} if key else {}


def _observe(key: tuple[str, str], indexes: dict[str, kopf.Index], poll_result: Poll) -> Observed:
    found: dict[str, Child] = {}
    for index_name in ("deployments", "statefulsets", "services", "networkpolicies"):
        for child in indexes[index_name].get(key, []):
            found[child.kind] = child
    return Observed(children=found, server_restarts=sum(indexes["server_pods"].get(key, [])), poll=poll_result)


@kopf.on.resume(*JOB)
@kopf.on.create(*JOB)
@kopf.on.update(*JOB)
@kopf.timer(*JOB, interval=TIMER_INTERVAL, id="reconcile-timer")
def reconcile_job(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: logging.Logger,
    deployments: kopf.Index,
    statefulsets: kopf.Index,
    services: kopf.Index,
    networkpolicies: kopf.Index,
    server_pods: kopf.Index,
    **_: Any,
) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return  # Going away: the garbage collector removes the children through their owner references.
    now = datetime.now(UTC)
    settings: Settings = memo.settings
    name, namespace = meta["name"], meta["namespace"]
    current = dict(status)
    generation = int(meta.get("generation", 1))
    try:
        job = parse_job(dict(body))
    except JobInvalid as exc:
        plan = reconcile.invalid_plan(current, generation, str(exc), now)
    else:
        indexes = {
            "deployments": deployments,
            "statefulsets": statefulsets,
            "services": services,
            "networkpolicies": networkpolicies,
            "server_pods": server_pods,
        }
        key = (namespace, name)
        previous_poll: Poll = memo.get("poll", Poll())
        observed = _observe(key, indexes, Poll())
        server = observed.children.get("Deployment")
        if server and server.ready_replicas >= 1 and not current.get("completionTime"):
            memo.poll = poll(status_url(settings, name, namespace), previous_poll, settings.poll_timeout)
        else:
            memo.poll = Poll()
        observed = _observe(key, indexes, memo.poll)
        plan = reconcile.plan(job, generation, current, observed, now, settings)
    _apply(plan, body, memo.children)
    for key_, value in plan.status.items():
        if current.get(key_) != value:
            patch.status[key_] = value
    for gone in set(current) - set(plan.status):
        patch.status[gone] = None


def _apply(plan: reconcile.Plan, body: kopf.Body, children: Children) -> None:
    # Logged through a plain logger: kopf's per-object logger would turn warnings into Events too,
    # and the plan's events are posted explicitly, once each.
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    job = f"{namespace}/{name}"
    for manifest in plan.create:
        kopf.adopt(manifest, owner=body)
        children.create(namespace, manifest)
        log.info("%s: created %s %s", job, manifest["kind"], manifest["metadata"]["name"])
    for manifest in plan.update:
        children.patch(namespace, manifest)
        log.info("%s: updated %s %s to the job's spec", job, manifest["kind"], manifest["metadata"]["name"])
    for kind, child_name in plan.delete:
        children.delete(namespace, kind, child_name)
        log.info("%s: deleted %s %s (runPolicy.cleanPolicy)", job, kind, child_name)
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        (log.warning if event.type == "Warning" else log.info)("%s: %s: %s", job, event.reason, event.message)
    if plan.delete_job:
        log.info("%s: deleting the job: ttlSecondsAfterFinished has passed", job)
        children.delete_job(namespace, name)
