"""The reconcile plan, decision by decision, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubeflower.core import contract
from kubeflower.core.api import FederatedTrainingJobStatus as JobStatus
from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus
from kubeflower.core.validation import parse_job
from kubeflower_operator import builders
from kubeflower_operator.observed import CONFIG_HASH, Child, Observed, Poll, ServerPod, restart_count, summarize
from kubeflower_operator.reconcile import Plan, Refusal, count_restarts, desired_children, invalid_plan, plan, refused
from kubeflower_operator.settings import Settings
from testbed.jobs import job

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(poll_failure_tolerance=60)


def children(parsed: Any, *, ready: bool = True, clients: bool = True, ready_clients: int = 2) -> dict[str, Child]:
    found = {}
    for manifest in desired_children(parsed, SETTINGS):
        if manifest["kind"] == "StatefulSet" and not clients:
            continue
        child = summarize(manifest)
        ready_n = (1 if ready else 0) if manifest["kind"] == "Deployment" else ready_clients
        found[child.kind] = Child(
            child.kind,
            child.name,
            child.replicas,
            ready_n,
            child.config_hash,
            resource_version="7",
            partitions=child.partitions,
        )
    return found


def document(rounds_done: int, phase: Phase = Phase.RUNNING, total: int = 3, message: str = "") -> ServerStatus:
    doc = ServerStatus(phase=phase, total_rounds=total, message=message)
    for r in range(1, rounds_done + 1):
        doc = doc.with_round(RoundRecord(round=r, metrics={"loss": 1.0 / r, "accuracy": 0.5 + r / 10}, replies=2))
    return doc


def test_new_job_gets_the_server_first_and_pending() -> None:
    parsed = parse_job(job(namespace="default"))
    result = plan(parsed, 1, JobStatus(), Observed(), NOW, SETTINGS)
    assert [m["kind"] for m in result.create] == ["Deployment", "Service", "NetworkPolicy"]
    assert result.status.wire()["phase"] == "Pending" and result.status.wire()["reason"] == "WaitingForServer"
    assert result.status.wire()["round"] == "0/3" and result.status.wire()["clients"] == "0/2"
    assert result.status.wire()["observedGeneration"] == 1
    conditions = {c["type"]: c for c in result.status.wire()["conditions"]}
    assert conditions["ServerReady"]["status"] == "False" and conditions["ServerReady"]["observedGeneration"] == 1


def test_clients_come_once_the_server_is_ready() -> None:
    parsed = parse_job(job(namespace="default"))
    not_ready = plan(
        parsed, 1, JobStatus(), Observed(children=children(parsed, ready=False, clients=False)), NOW, SETTINGS
    )
    assert not_ready.create == []
    ready = plan(parsed, 1, JobStatus(), Observed(children=children(parsed, clients=False)), NOW, SETTINGS)
    assert [m["kind"] for m in ready.create] == ["StatefulSet"]
    assert ready.status.wire()["phase"] == "Pending" and ready.status.wire()["reason"] == "CreatingClients"


def test_a_steady_job_plans_nothing_and_the_same_status() -> None:
    parsed = parse_job(job(namespace="default"))
    observed = Observed(children=children(parsed), poll=Poll(document=document(1)))
    first = plan(parsed, 1, JobStatus(), observed, NOW, SETTINGS)
    second = plan(parsed, 1, first.status, observed, NOW + timedelta(seconds=30), SETTINGS)
    assert (second.create, second.update, second.delete, second.events) == ([], [], [], [])
    assert second.status == first.status, "an unchanged world must not change the status"


def test_rounds_metrics_and_one_event_per_round() -> None:
    parsed = parse_job(job(namespace="default"))
    observed = Observed(children=children(parsed), poll=Poll(document=document(2)))
    result = plan(parsed, 1, JobStatus(current_round=0), observed, NOW, SETTINGS)
    assert result.status.wire()["phase"] == "Running" and result.status.wire()["round"] == "2/3"
    assert result.status.wire()["metrics"] == {"loss": 0.5, "accuracy": 0.7}
    assert [e.reason for e in result.events] == ["RoundCompleted", "RoundCompleted"]
    assert "round 2/3" in result.events[1].message and "accuracy=0.7" in result.events[1].message
    again = plan(parsed, 1, result.status, observed, NOW, SETTINGS)
    assert again.events == []


def test_a_round_with_a_nan_metric_is_a_warning_naming_it_and_the_job_goes_on() -> None:
    parsed = parse_job(job(namespace="default", rounds=9))
    doc = ServerStatus(phase=Phase.RUNNING, total_rounds=9)
    for r in range(1, 8):  # rounds 1 to 5 are summed up in one event; 6 and 7 get their own
        doc = doc.with_round(RoundRecord(round=r, metrics={"loss": float("nan") if r in (2, 7) else 1.0}))
    result = plan(parsed, 1, JobStatus(), Observed(children=children(parsed), poll=Poll(document=doc)), NOW, SETTINGS)
    assert result.status.wire()["phase"] == "Running" and result.status.wire()["round"] == "7/9"
    assert [(e.type, e.reason) for e in result.events] == [
        ("Warning", "RoundCompleted"),
        ("Normal", "RoundCompleted"),
        ("Warning", "RoundCompleted"),
    ]
    assert "NaN or infinite metrics in rounds 2" in result.events[0].message
    assert "round 7/9" in result.events[2].message and "loss=NaN" in result.events[2].message


def test_status_metrics_keep_four_significant_digits() -> None:
    parsed = parse_job(job(namespace="default"))
    doc = ServerStatus(total_rounds=3).with_round(
        RoundRecord(round=1, metrics={"accuracy": 0.9777777777777777, "loss": 0.000123456})
    )
    result = plan(parsed, 1, JobStatus(), Observed(children=children(parsed), poll=Poll(document=doc)), NOW, SETTINGS)
    assert result.status.wire()["metrics"] == {"accuracy": 0.9778, "loss": 0.0001235}


def test_success_removes_the_clients_keeps_the_server_then_ttl() -> None:
    parsed = parse_job(job(namespace="default", runPolicy={"ttlSecondsAfterFinished": 60}))
    found = children(parsed)
    done = plan(
        parsed,
        1,
        JobStatus(current_round=2),
        Observed(children=found, poll=Poll(document=document(3, Phase.SUCCEEDED))),
        NOW,
        SETTINGS,
    )
    assert done.status.wire()["phase"] == "Succeeded" and done.status.wire()["completionTime"] == "2026-11-28T12:00:00Z"
    assert done.delete == [("StatefulSet", "digits-fedavg-clients")]
    assert [e.reason for e in done.events] == ["RoundCompleted", "RunSucceeded"]
    assert not done.delete_job
    # The final status, for a server pod re-created after the end: it serves this, not a new run.
    (final,) = done.create
    assert final["kind"] == "ConfigMap" and final["metadata"]["name"] == "digits-fedavg-server"
    served = ServerStatus.model_validate_json(final["data"][contract.FINAL_STATUS_KEY])
    assert (served.phase, served.current_round, served.total_rounds) == (Phase.SUCCEEDED, 3, 3)
    kept = {k: v for k, v in found.items() if k != "StatefulSet"} | {"ConfigMap": Child("ConfigMap", "x")}
    later = plan(
        parsed,
        1,
        done.status,
        Observed(children=kept),
        NOW + timedelta(seconds=61),
        SETTINGS,
    )
    assert later.delete_job and later.create == [] and later.status.wire()["phase"] == "Succeeded"


def test_clean_policy_all_and_none() -> None:
    for policy, expected in (("All", {"Deployment", "Service", "NetworkPolicy", "StatefulSet"}), ("None", set())):
        parsed = parse_job(job(namespace="default", runPolicy={"cleanPolicy": policy}))
        done = plan(
            parsed,
            1,
            JobStatus(),
            Observed(children=children(parsed), poll=Poll(document=document(3, Phase.SUCCEEDED))),
            NOW,
            SETTINGS,
        )
        assert {k for k, _ in done.delete} == expected


def test_run_failure_reported_by_the_server() -> None:
    parsed = parse_job(job(namespace="default"))
    doc = document(1, Phase.FAILED, message="ServerApp raised ValueError: bad config")
    failed = plan(parsed, 1, JobStatus(), Observed(children=children(parsed), poll=Poll(document=doc)), NOW, SETTINGS)
    assert failed.status.wire()["phase"] == "Failed" and failed.status.wire()["reason"] == "RunFailed"
    assert "bad config" in failed.status.wire()["message"]


def test_unreachable_status_is_tolerated_then_fails() -> None:
    parsed = parse_job(job(namespace="default"))
    found = children(parsed)
    failing = Poll(error="ConnectionRefusedError", failing_since=NOW.timestamp() - 30)
    tolerated = plan(parsed, 1, JobStatus(), Observed(children=found, poll=failing), NOW, SETTINGS)
    assert tolerated.status.wire()["phase"] == "Running"
    failing = Poll(error="ConnectionRefusedError", failing_since=NOW.timestamp() - 61)
    failed = plan(parsed, 1, JobStatus(), Observed(children=found, poll=failing), NOW, SETTINGS)
    assert (
        failed.status.wire()["reason"] == "StatusUnreachable"
        and "ConnectionRefusedError" in failed.status.wire()["message"]
    )


def test_backoff_limit_and_deadline() -> None:
    parsed = parse_job(job(namespace="default", runPolicy={"backoffLimit": 1, "activeDeadlineSeconds": 100}))
    found = children(parsed)
    ok = plan(parsed, 1, JobStatus(), Observed(children=found, server_pods=(ServerPod("a", "t", 1),)), NOW, SETTINGS)
    assert ok.status.wire()["phase"] == "Running"
    assert [(e.type, e.reason) for e in ok.events] == [("Warning", "ServerRestarted")]
    assert "1 of runPolicy.backoffLimit=1" in ok.events[0].message
    assert (
        plan(
            parsed, 1, ok.status, Observed(children=found, server_pods=(ServerPod("a", "t", 1),)), NOW, SETTINGS
        ).events
        == []
    )
    over = plan(parsed, 1, JobStatus(), Observed(children=found, server_pods=(ServerPod("a", "t", 2),)), NOW, SETTINGS)
    assert over.status.wire()["reason"] == "BackoffLimitExceeded"
    late = plan(parsed, 1, JobStatus(start_time="2026-11-28T11:58:00Z"), Observed(children=found), NOW, SETTINGS)
    assert late.status.wire()["reason"] == "DeadlineExceeded" and late.delete == [
        ("StatefulSet", "digits-fedavg-clients")
    ]


def test_scaling_updates_the_clients_but_never_the_server() -> None:
    parsed = parse_job(job(namespace="default"))
    found = children(parsed)
    scaled = parse_job(job(namespace="default", clients={"replicas": 5}))
    result = plan(scaled, 2, JobStatus(), Observed(children=found), NOW, SETTINGS)
    assert [(m["kind"], m["spec"]["replicas"]) for m in result.update] == [("StatefulSet", 5)]
    assert result.update[0]["metadata"]["annotations"][CONFIG_HASH] != found["StatefulSet"].config_hash
    # The pods' template is untouched: no client restarts, the data's split stays at 2 partitions.
    before = {m["kind"]: m for m in desired_children(parsed, SETTINGS)}["StatefulSet"]
    assert result.update[0]["spec"]["template"] == before["spec"]["template"]
    assert result.status.wire()["partitions"] == 2


def test_spec_changes_replace_children_guarded_by_their_resource_version() -> None:
    """A removed field (a nodeSelector) leaves the child: replaced whole, at the version observed."""
    selected = parse_job(
        job(namespace="default", clients={"nodeSelector": {"pool": "a"}}, service={"type": "NodePort"})
    )
    found = children(selected)
    plain = parse_job(job(namespace="default"))
    result = plan(plain, 2, JobStatus(current_round=1), Observed(children=found), NOW, SETTINGS)
    replaced = {m["kind"]: m for m in result.update}
    assert set(replaced) == {"StatefulSet", "Service"}, "mid-run the server stays"
    assert all(m["metadata"]["resourceVersion"] == "7" for m in replaced.values())
    assert "nodeSelector" not in replaced["StatefulSet"]["spec"]["template"]["spec"]
    assert replaced["Service"]["spec"]["type"] == "ClusterIP"


def test_the_server_follows_its_spec_until_a_round_has_finished() -> None:
    """A wrong image or resources can be fixed: the server is replaced before its run makes progress."""
    wrong = parse_job(job(namespace="default", server={"resources": {"requests": {"cpu": "64"}}}))
    found = children(wrong, ready=False, clients=False)
    fixed = parse_job(job(namespace="default"))
    early = plan(fixed, 2, JobStatus(server_pod="uid-1"), Observed(children=found), NOW, SETTINGS)
    (server,) = [m for m in early.update if m["kind"] == "Deployment"]
    defaults = builders.with_defaults({}, builders.SERVER_RESOURCES)
    assert server["spec"]["template"]["spec"]["containers"][0]["resources"] == defaults, "the 64 CPUs are gone"
    assert early.status.server_pod == "!uid-1", "the replaced server's new pod is not a restart"
    running = children(wrong)
    late = plan(fixed, 2, JobStatus(current_round=2), Observed(children=running), NOW, SETTINGS)
    assert [m["kind"] for m in late.update if m["kind"] == "Deployment"] == []


def test_restarts_count_re_created_server_pods() -> None:
    """backoffLimit counts a pod made anew (eviction, node loss), not only a container's restarts."""
    first = count_restarts(JobStatus(), (ServerPod("a", "t1", 1),))
    assert first == {"server_restarts": 1, "server_pod": "a", "server_pod_restarts": 1}
    same = count_restarts(JobStatus(**first), (ServerPod("a", "t1", 2),))
    assert same["server_restarts"] == 2
    evicted = count_restarts(JobStatus(**same), (ServerPod("b", "t2", 0),))
    assert evicted["server_restarts"] == 3 and evicted["server_pod"] == "b"
    gone = count_restarts(JobStatus(**evicted), ())
    assert gone == evicted, "no pod for a moment (being re-created) changes nothing"
    expected = count_restarts(JobStatus(**{**evicted, "server_pod": "!b"}), (ServerPod("c", "t3", 0),))
    assert expected["server_restarts"] == 3 and expected["server_pod"] == "c"


def test_a_refused_child_is_the_jobs_reason_and_warned_once() -> None:
    parsed = parse_job(job(namespace="default"))
    planned = plan(parsed, 1, JobStatus(), Observed(), NOW, SETTINGS).status
    refusal = Refusal(
        "Deployment", "digits-fedavg-server", 422, 'spec.template.spec.containers[0].image: Invalid value: "x"'
    )
    status, events = refused(JobStatus(), planned, [refusal], 1, NOW)
    wire = status.wire()
    assert wire["phase"] == "Pending" and wire["reason"] == "ChildRefused"
    assert "containers[0].image: Invalid value" in wire["message"]
    conditions = {c["type"]: c for c in wire["conditions"]}
    assert conditions["ChildrenAccepted"]["status"] == "False"
    assert [e.reason for e in events] == ["ChildRefused"]
    assert refused(status, planned, [refusal], 1, NOW)[1] == []


def test_suspend_scales_both_to_zero() -> None:
    parsed = parse_job(job(namespace="default"))
    suspended = parse_job(job(namespace="default", runPolicy={"suspend": True}))
    result = plan(suspended, 2, JobStatus(), Observed(children=children(parsed)), NOW, SETTINGS)
    assert sorted((m["kind"], m["spec"]["replicas"]) for m in result.update) == [("Deployment", 0), ("StatefulSet", 0)]
    assert result.status.wire()["phase"] == "Suspended"


def test_invalid_spec_fails_without_children_and_warns_once() -> None:
    first = invalid_plan(JobStatus(), 3, "spec.rounds: must be >= 1", NOW)
    assert first.status.wire()["phase"] == "Failed" and first.status.wire()["reason"] == "ValidationFailed"
    assert first.status.wire()["observedGeneration"] == 3 and first.create == []
    assert [e.type for e in first.events] == ["Warning"]
    assert invalid_plan(first.status, 3, "spec.rounds: must be >= 1", NOW).events == []


def test_condition_transition_time_moves_only_on_change() -> None:
    parsed = parse_job(job(namespace="default"))
    pending = plan(parsed, 1, JobStatus(), Observed(), NOW, SETTINGS)
    later = NOW + timedelta(minutes=1)
    still = plan(parsed, 1, pending.status, Observed(), later, SETTINGS)
    ready = plan(parsed, 1, pending.status, Observed(children=children(parsed)), later, SETTINGS)

    def server(p: Plan) -> dict[str, Any]:
        return next(c for c in p.status.wire()["conditions"] if c["type"] == "ServerReady")

    assert server(still)["lastTransitionTime"] == server(pending)["lastTransitionTime"]
    assert server(ready)["lastTransitionTime"] == "2026-11-28T12:01:00Z"


def test_restart_count_sums_containers() -> None:
    pod = {"status": {"containerStatuses": [{"restartCount": 2}, {"restartCount": 1}]}}
    assert restart_count(pod) == 3 and restart_count({}) == 0


def test_a_data_claim_that_one_node_holds_cannot_serve_clients_on_several() -> None:
    from kubeflower_operator.reconcile import data_volume_problem

    def problem(modes: tuple[str, ...] | None, **clients: Any) -> str | None:
        return data_volume_problem(parse_job(job(data={"claimName": "d"}, clients={"replicas": 2, **clients})), modes)

    assert problem(None) is None  # not read (yet)
    assert problem(("ReadOnlyMany",)) is None and problem(("ReadWriteMany", "ReadWriteOnce")) is None
    assert "ReadWriteOnce" in (problem(("ReadWriteOnce",)) or "")
    assert problem(("ReadWriteOnce",), nodeSelector={"kubernetes.io/hostname": "n1"}) is None  # pinned to one node
    assert "ReadWriteOncePod" in (problem(("ReadWriteOncePod",), nodeSelector={"kubernetes.io/hostname": "n1"}) or "")
    assert problem(("ReadWriteOnce",), replicas=1) is None
    parsed = parse_job(job(data={"claimName": "d"}))
    failed = plan(parsed, 1, JobStatus(), Observed(data_claim_modes=("ReadWriteOnce",)), NOW, SETTINGS)
    assert failed.status.phase == Phase.FAILED and failed.create == []
    assert "spec.data.claimName" in (failed.status.message or "")


def _own_app_job(**metric_names: str) -> Any:
    return parse_job(
        job(namespace="default", task=None, app={"path": "/app"}, image="me/app:1", metricNames=metric_names)
    )


def test_an_own_apps_metrics_by_name_with_accuracy_and_loss_as_the_job_names_them() -> None:
    record = RoundRecord(
        round=1,
        metrics={"eval_acc": 0.8, "eval_loss": 0.4},
        server_metrics={"accuracy": 0.9, "loss": 0.3, "eval_acc": 0.1},
        train_metrics={"train_loss": 0.5},
    )
    doc = ServerStatus(total_rounds=3).with_round(record)
    defaults = _own_app_job()
    result = plan(
        defaults, 1, JobStatus(), Observed(children=children(defaults), poll=Poll(document=doc)), NOW, SETTINGS
    )
    # Unset names: the first of Flower's template names in the clients' evaluation (eval_acc).
    assert result.status.wire()["metrics"] == {"accuracy": 0.8, "loss": 0.4, "eval_acc": 0.8, "eval_loss": 0.4}
    chosen = _own_app_job(accuracy="accuracy", loss="loss")  # the centralized evaluation's
    result = plan(chosen, 1, JobStatus(), Observed(children=children(chosen), poll=Poll(document=doc)), NOW, SETTINGS)
    assert result.status.wire()["metrics"] == {"accuracy": 0.9, "loss": 0.3, "eval_acc": 0.8, "eval_loss": 0.4}


def test_a_hostile_document_is_read_bounded() -> None:
    """Ten thousand metrics and an endless message from a pod: the operator keeps a bounded status."""
    many = {f"m{i}": float(i) for i in range(10000)}
    raw = ServerStatus(total_rounds=3, current_round=1).model_dump(by_alias=True) | {
        "metrics": many,
        "history": [{"round": 1, "metrics": many, "trainMetrics": many, "serverMetrics": many}],
        "message": "x" * 100000,
    }
    import json

    doc = ServerStatus.model_validate_json(json.dumps(raw))  # as `fetch` reads it
    assert len(doc.metrics) == len(doc.history[0].server_metrics) == 16 and len(doc.message) == 1024
    parsed = _own_app_job()
    result = plan(parsed, 1, JobStatus(), Observed(children=children(parsed), poll=Poll(document=doc)), NOW, SETTINGS)
    assert len(result.status.wire()["metrics"]) == 16


def test_a_documents_history_keeps_it_within_what_a_reader_takes() -> None:
    """An app with the most metrics of the longest names, for 1000 rounds, would make a 3 MB
    document; the server keeps the newest rounds that fit, so the operator's bounded read (1 MiB)
    never refuses a document of ours. A built-in job's 1000 rounds all fit."""
    from kubeflower.core.server_status import HISTORY_LIMIT, MAX_DOCUMENT_BYTES, METRIC_NAME_LIMIT, METRICS_LIMIT

    names = [f"{i:02d}".ljust(METRIC_NAME_LIMIT, "m") for i in range(METRICS_LIMIT)]
    wide = {name: -1.2345678901234567e-300 for name in names}
    heavy = light = ServerStatus(total_rounds=HISTORY_LIMIT)
    for r in range(1, HISTORY_LIMIT + 1):
        heavy = heavy.with_round(RoundRecord(round=r, metrics=wide, train_metrics=wide, server_metrics=wide))
        light = light.with_round(RoundRecord(round=r, metrics={"loss": 0.1, "accuracy": 0.9}, replies=2))
    body = heavy.to_json().encode()
    assert len(body) <= MAX_DOCUMENT_BYTES and heavy.history[-1].round == HISTORY_LIMIT
    assert 0 < len(heavy.history) < HISTORY_LIMIT
    assert ServerStatus.model_validate_json(body, strict=True).current_round == HISTORY_LIMIT
    assert [r.round for r in light.history] == list(range(1, HISTORY_LIMIT + 1))
