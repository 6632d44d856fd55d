"""deploy/ as `kubectl kustomize` builds it: the metrics port is the operator's, it is reachable
through the operator's NetworkPolicy, and the monitors select what the operator and jobs run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from kubeflower.core import contract
from kubeflower.core.validation import parse_job
from kubeflower_operator import builders, leadership
from kubeflower_operator.settings import Settings
from testbed.jobs import job

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def kustomize(folder: Path) -> dict[str, dict[str, Any]]:
    done = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(done.stdout)}


def test_the_operators_metrics_port_is_served_exposed_and_let_in() -> None:
    objects = kustomize(DEPLOY)
    pod = objects["Deployment/kubeflower-operator"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == Settings().metrics_port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    service = objects["Service/kubeflower-operator-metrics"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] == "metrics"
    policy = objects["NetworkPolicy/kubeflower-operator"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (rule,) = policy["ingress"]
    assert "from" not in rule, "scrapers may come from any namespace"
    assert {p["port"] for p in rule["ports"]} == {ports["metrics"], ports["health"]}


def test_the_monitors_select_the_operator_and_every_jobs_server() -> None:
    monitors = kustomize(DEPLOY / "monitoring")
    service = kustomize(DEPLOY)["Service/kubeflower-operator-metrics"]
    endpoint = monitors["ServiceMonitor/kubeflower-operator"]["spec"]
    assert endpoint["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert endpoint["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    server = builders.server_deployment(parse_job(job()), Settings())["spec"]["template"]
    pods = monitors["PodMonitor/kubeflower-job-servers"]["spec"]
    assert pods["selector"]["matchLabels"].items() <= server["metadata"]["labels"].items()
    (container,) = server["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}[pods["podMetricsEndpoints"][0]["port"]]
    assert port == contract.STATUS_PORT, "the server's /metrics is on its status port"
    policy = builders.server_network_policy(parse_job(job()))
    assert policy is not None
    assert {"ports": [{"port": contract.STATUS_PORT, "protocol": "TCP"}]} in policy["spec"]["ingress"]


def test_two_replicas_elect_a_leader_with_the_rbac_it_needs_and_a_disruption_budget() -> None:
    objects = kustomize(DEPLOY)
    deployment = objects["Deployment/kubeflower-operator"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBEFLOWER_LEADER_ELECTION"]["value"] == "true"
    assert env["KUBEFLOWER_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # A standby must pass its probes (kopf's health port opens only on the leader).
    probes = (container["livenessProbe"], container["readinessProbe"])
    assert [p["httpGet"]["port"] for p in probes] == ["metrics", "metrics"]
    budget = objects["PodDisruptionBudget/kubeflower-operator"]["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    role = objects["Role/kubeflower-operator-leader-election"]
    granted = {
        (verb, name)
        for rule in role["rules"]
        if "leases" in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", ["*"])
    }
    assert granted == {("get", leadership.LEASE_NAME), ("update", leadership.LEASE_NAME), ("create", "*")}
    binding = objects["RoleBinding/kubeflower-operator-leader-election"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"], "the Lease: the operator's namespace"


def test_job_rights_fold_into_the_built_in_user_roles() -> None:
    objects = kustomize(DEPLOY)
    edit = objects["ClusterRole/kubeflower-edit"]
    view = objects["ClusterRole/kubeflower-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "create" in edit["rules"][0]["verbs"] and "federatedtrainingjobs" in edit["rules"][0]["resources"]
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}


def test_the_namespaced_install_grants_the_same_rules_in_the_watched_namespace_only() -> None:
    cluster_wide = kustomize(DEPLOY)
    objects = kustomize(DEPLOY.parent / "deploy-namespaced")
    assert "ClusterRole/kubeflower-operator" not in objects
    assert "ClusterRoleBinding/kubeflower-operator" not in objects
    role = objects["Role/kubeflower-operator"]
    namespace = role["metadata"]["namespace"]
    (container,) = objects["Deployment/kubeflower-operator"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [f"--namespace={namespace}"], "it watches where its Role is"
    crd_rule = {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    }
    assert objects["ClusterRole/kubeflower-operator-crds"]["rules"] == [crd_rule], (
        "only reading the CRDs is cluster-wide"
    )
    expected = [r for r in cluster_wide["ClusterRole/kubeflower-operator"]["rules"] if r != crd_rule]
    assert role["rules"] == expected, "the namespaced rules are the cluster-wide ones"
    binding = objects["RoleBinding/kubeflower-operator"]
    assert binding["metadata"]["namespace"] == namespace and binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kubeflower-operator",
    }
    assert binding["subjects"][0]["namespace"] == "kubeflower-system"
