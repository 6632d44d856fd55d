"""The children a job gets, built by pure functions: names, labels, contract, security."""

from __future__ import annotations

import json

import pytest

from kubeflower.core import contract
from kubeflower.core.validation import JobInvalid, parse_job
from kubeflower_operator import builders
from kubeflower_operator.reconcile import desired_children
from kubeflower_operator.settings import Settings
from testbed.jobs import job
from tests.pss import restricted_violations
from tests.strict import strict_errors

SETTINGS = Settings()


def env_of(manifest: dict) -> dict:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_children_have_deterministic_names_and_labels() -> None:
    parsed = parse_job(job(namespace="team-a"))
    kinds = {m["kind"]: m for m in builders.all_children(parsed, SETTINGS)}
    assert set(kinds) == {"Deployment", "Service", "NetworkPolicy", "StatefulSet"}
    policies = [m["metadata"]["name"] for m in builders.all_children(parsed, SETTINGS) if m["kind"] == "NetworkPolicy"]
    assert policies == ["digits-fedavg-server", "digits-fedavg-clients"]
    assert kinds["Deployment"]["metadata"]["name"] == "digits-fedavg-server"
    assert kinds["Service"]["metadata"]["name"] == "digits-fedavg-server"
    assert kinds["StatefulSet"]["metadata"]["name"] == "digits-fedavg-clients"
    for manifest in kinds.values():
        assert manifest["metadata"]["namespace"] == "team-a"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == "digits-fedavg"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeflower-operator"
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == selector
    assert selector.items() <= kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items()


def test_server_runs_one_recreated_pod_with_the_run_config() -> None:
    server = builders.server_deployment(parse_job(job(rounds=7)), SETTINGS)
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"
    env = env_of(server)
    run_config = json.loads(env[contract.ENV_RUN_CONFIG])
    assert run_config["num-server-rounds"] == 7 and run_config["dataset"] == "digits"
    assert run_config["min-available-clients"] == 2 and contract.ENV_MIN_CLIENTS not in env
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubeflower-server"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in container["ports"]} == {contract.SUPERLINK_PORT, contract.STATUS_PORT}


def test_clients_get_partition_from_ordinal_and_the_server_address() -> None:
    clients = builders.client_statefulset(parse_job(job(namespace="ml", clients={"replicas": 4})), SETTINGS)
    assert clients["spec"]["replicas"] == 4 and clients["spec"]["podManagementPolicy"] == "Parallel"
    env = env_of(clients)
    assert env[contract.ENV_POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[contract.ENV_NUM_PARTITIONS] == "4"
    assert env[contract.ENV_SUPERLINK] == f"digits-fedavg-server.ml.svc:{contract.SUPERLINK_PORT}"
    assert contract.ordinal_from_pod_name("digits-fedavg-clients-3") == 3


def test_user_env_resources_and_scheduling_reach_the_pods() -> None:
    spec = {
        "replicas": 2,
        "env": [{"name": "EXTRA", "value": "1"}],
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
    }
    clients = builders.client_statefulset(parse_job(job(clients=spec)), SETTINGS)
    pod = clients["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "gpu"
    assert pod["containers"][0]["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}
    env = env_of(clients)
    assert env["EXTRA"] == "1"
    # A contract variable in the user's env (KUBEFLOWER_*, FLWR_*) is refused by validation
    # (testbed.jobs.INVALID: reserved-partition-env, reserved-flower-env).


def test_torch_threads_follow_the_client_containers_cpu_limit_unless_the_user_sets_them() -> None:
    clients = builders.client_statefulset(parse_job(job()), SETTINGS)
    (container,) = clients["spec"]["template"]["spec"]["containers"]
    (threads,) = [e for e in container["env"] if e["name"] == contract.ENV_THREADS]
    ref = threads["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
    for resources, read in [
        ({"requests": {"cpu": "500m"}}, "requests.cpu"),  # no CPU limit (a common cluster policy): the request
        ({"requests": {"cpu": "1"}, "limits": {"cpu": "3"}}, "limits.cpu"),
        ({"requests": {"memory": "1Gi"}}, "limits.cpu"),  # neither: the node's CPUs
    ]:
        limited = builders.client_statefulset(parse_job(job(clients={"resources": resources})), SETTINGS)
        assert env_of(limited)[contract.ENV_THREADS]["resourceFieldRef"]["resource"] == read, resources
    mine = builders.client_statefulset(
        parse_job(job(clients={"env": [{"name": contract.ENV_THREADS, "value": "4"}]})), SETTINGS
    )
    assert [
        e for e in mine["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == contract.ENV_THREADS
    ] == [{"name": contract.ENV_THREADS, "value": "4"}]


def spread_of(**clients: object) -> list | None:
    pod = builders.client_statefulset(parse_job(job(clients={"replicas": 3, **clients})), SETTINGS)["spec"]["template"][
        "spec"
    ]
    return pod.get("topologySpreadConstraints")


def test_clients_spread_softly_over_nodes_by_default() -> None:
    assert spread_of() == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": builders.selector_labels("digits-fedavg", "clients")},
        }
    ]
    # It selects exactly the job's client pods: their template's labels, not the server's.
    clients = builders.client_statefulset(parse_job(job()), SETTINGS)
    selected = spread_of()[0]["labelSelector"]["matchLabels"]
    assert selected.items() <= clients["spec"]["template"]["metadata"]["labels"].items()
    server = builders.server_deployment(parse_job(job()), SETTINGS)
    assert not selected.items() <= server["spec"]["template"]["metadata"]["labels"].items()
    assert "topologySpreadConstraints" not in server["spec"]["template"]["spec"]


def test_the_users_own_spread_or_pod_affinity_replaces_the_default() -> None:
    zones = [
        {
            "maxSkew": 2,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"site": "a"}},
        }
    ]
    assert spread_of(topologySpreadConstraints=zones) == zones
    assert spread_of(topologySpreadConstraints=[]) is None, "[] turns the spread off"
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"x": "y"}}}
            ]
        }
    }
    assert spread_of(affinity=anti) is None
    # A nodeAffinity only says which nodes: the spread stays, over those nodes.
    nodes = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
            }
        }
    }
    assert spread_of(affinity=nodes)[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread_of(nodeSelector={"pool": "a"})[0]["whenUnsatisfiable"] == "ScheduleAnyway"


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_pods_meet_the_restricted_pod_security_standard(kind: str) -> None:
    manifest = {m["kind"]: m for m in builders.all_children(parse_job(job()), SETTINGS)}[kind]
    pod = manifest["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_pss_checker_catches_a_violation() -> None:
    pod = builders.server_deployment(parse_job(job()), SETTINGS)["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(pod)) == 2


def test_suspend_scales_to_zero_and_image_defaults_from_settings() -> None:
    parsed = parse_job(job(runPolicy={"suspend": True}))
    assert builders.server_deployment(parsed, SETTINGS)["spec"]["replicas"] == 0
    assert builders.client_statefulset(parsed, SETTINGS)["spec"]["replicas"] == 0
    container = builders.server_deployment(parsed, Settings(image="registry/wl:9"))["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"] == "registry/wl:9"


def test_user_app_passes_its_path_and_run_config() -> None:
    parsed = parse_job(job(task=None, app={"path": "/app", "runConfig": {"lr": 0.1}}, image="me/app:1"))
    env = env_of(builders.server_deployment(parsed, SETTINGS))
    assert env[contract.ENV_APP_PATH] == "/app"
    assert json.loads(env[contract.ENV_RUN_CONFIG]) == {"lr": 0.1, contract.RUN_CONFIG_ROUNDS: 3}


def test_config_hash_changes_with_the_spec_only() -> None:
    def client_hash(**spec: object) -> str:
        kinds = {m["kind"]: m for m in desired_children(parse_job(job(**spec)), SETTINGS)}
        return kinds["StatefulSet"]["metadata"]["annotations"]["kubeflower.io/config-hash"]

    assert client_hash() == client_hash()
    assert client_hash() != client_hash(clients={"replicas": 3})


def test_warm_client_apps_reach_the_client_pods_with_their_memory() -> None:
    def client_container(**clients: object) -> dict:
        spec = builders.client_statefulset(parse_job(job(clients={"replicas": 2, **clients})), SETTINGS)
        return spec["spec"]["template"]["spec"]["containers"][0]

    warm = client_container()
    assert env_of({"spec": {"template": {"spec": {"containers": [warm]}}}})[contract.ENV_WARM_CLIENTAPPS] == "true"
    assert warm["resources"] == {
        "requests": {"memory": builders.WARM_CLIENT_MEMORY_REQUEST}
    }  # the fork server's ~0.5 GB
    cold = client_container(warmClientApps=False)
    assert env_of({"spec": {"template": {"spec": {"containers": [cold]}}}})[contract.ENV_WARM_CLIENTAPPS] == "false"
    assert "resources" not in cold
    own = client_container(resources={"limits": {"memory": "3Gi"}})
    assert own["resources"] == {"limits": {"memory": "3Gi"}}  # the user's memory wins
    app = builders.client_statefulset(parse_job(job(task=None, app={"path": "/app"}, image="me/app:1")), SETTINGS)
    assert env_of(app)[contract.ENV_APP_PATH] == "/app"  # the clients read what to pre-import from it


def test_the_output_volume_replaces_the_servers_output_emptydir_only() -> None:
    claim = parse_job(job(output={"claimName": "results"}))
    server = builders.server_deployment(claim, SETTINGS)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in server["volumes"]}
    assert volumes["output"] == {"name": "output", "persistentVolumeClaim": {"claimName": "results"}}
    assert {"name": "output", "mountPath": contract.OUTPUT_DIR} in server["containers"][0]["volumeMounts"]
    assert restricted_violations(server) == []
    clients = builders.client_statefulset(claim, SETTINGS)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in clients["volumes"]}["output"] == {"name": "output", "emptyDir": {}}
    nfs = parse_job(job(output={"source": {"csi": {"driver": "nfs.csi.k8s.io"}}}))
    server = builders.server_deployment(nfs, SETTINGS)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in server["volumes"]}["output"] == {
        "name": "output",
        "csi": {"driver": "nfs.csi.k8s.io"},
    }
    assert "persistentVolumeClaim results" in builders.results_location(claim)
    assert "emptyDir" in builders.results_location(parse_job(job()))


def test_the_server_mounts_its_jobs_final_status_optionally_and_read_only() -> None:
    parsed = parse_job(job())
    server = builders.server_deployment(parsed, SETTINGS)["spec"]["template"]["spec"]
    final = {v["name"]: v for v in server["volumes"]}["final"]
    assert final == {"name": "final", "configMap": {"name": "digits-fedavg-server", "optional": True}}
    mount = {"name": "final", "mountPath": contract.FINAL_STATUS_DIR, "readOnly": True}
    assert mount in server["containers"][0]["volumeMounts"]
    path = env_of(builders.server_deployment(parsed, SETTINGS))[contract.ENV_FINAL_STATUS]
    assert path == f"{contract.FINAL_STATUS_DIR}/{contract.FINAL_STATUS_KEY}"


def test_the_server_has_default_resources_that_the_user_overrides_per_resource() -> None:
    def resources(**server: object) -> dict:
        deployment = builders.server_deployment(parse_job(job(server=server)), SETTINGS)
        return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources() == builders.SERVER_RESOURCES  # Burstable, not BestEffort
    mine = resources(resources={"limits": {"memory": "512Mi"}, "requests": {"cpu": "2"}})
    assert mine == {"requests": {"cpu": "2"}, "limits": {"memory": "512Mi"}}  # nothing of ours next to yours
    assert resources(resources={"requests": {"nvidia.com/gpu": 1}})["requests"] == {
        "nvidia.com/gpu": 1,
        "cpu": "500m",
        "memory": "1Gi",
    }


def test_the_data_volume_is_the_clients_read_only_data_folder() -> None:
    parsed = parse_job(job(data={"claimName": "cifar"}))
    clients = builders.client_statefulset(parsed, SETTINGS)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in clients["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "cifar", "readOnly": True}}
    mounts = {m["name"]: m for m in clients["containers"][0]["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": contract.DATA_DIR, "readOnly": True}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {}}  # where the prepared arrays go instead
    assert env_of(builders.client_statefulset(parsed, SETTINGS))[contract.ENV_CACHE_DIR] == contract.CACHE_DIR
    assert restricted_violations(clients) == []
    server = builders.server_deployment(parsed, SETTINGS)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in server["volumes"]}["data"] == {"name": "data", "emptyDir": {}}


POD_TEMPLATE = {
    "volumes": [{"name": "certs", "secret": {"secretName": "ca"}}, {"name": "scratch", "emptyDir": {}}],
    "volumeMounts": [{"name": "certs", "mountPath": "/etc/ca", "readOnly": True}],
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "federation",
    "runtimeClassName": "gvisor",
    "labels": {"team": "ml", contract.JOB_LABEL: "not-yours"},
    "annotations": {"sidecar.example/inject": "false"},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
}


@pytest.mark.parametrize("component", ["server", "clients"])
def test_pod_template_fields_merge_under_the_operators_own_valid_and_restricted(component: str) -> None:
    spec = {component: {**POD_TEMPLATE, **({"replicas": 2} if component == "clients" else {})}}
    children = {m["kind"]: m for m in builders.all_children(parse_job(job(**spec)), SETTINGS)}
    for manifest in children.values():
        assert strict_errors(manifest) == [], manifest["kind"]
    manifest = children["Deployment" if component == "server" else "StatefulSet"]
    template = manifest["spec"]["template"]
    pod = template["spec"]
    assert restricted_violations(pod) == []
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["labels"][contract.JOB_LABEL] == "digits-fedavg"  # ours win
    assert template["metadata"]["annotations"] == {"sidecar.example/inject": "false"}
    assert {"name": "certs", "secret": {"secretName": "ca"}} in pod["volumes"]
    assert {v["name"] for v in pod["volumes"]} >= set(contract.POD_FOLDERS)  # ours stay
    assert {"name": "certs", "mountPath": "/etc/ca", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("federation", "gvisor")
    assert pod["topologySpreadConstraints"] == POD_TEMPLATE["topologySpreadConstraints"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_named_service_account_gets_its_token_mounted_and_nothing_else_changes() -> None:
    parsed = parse_job(job(server={"serviceAccountName": "federation-sa"}))
    pod = builders.server_deployment(parsed, SETTINGS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "federation-sa" and pod["automountServiceAccountToken"] is True
    assert restricted_violations(pod) == []
    clients = builders.client_statefulset(parsed, SETTINGS)["spec"]["template"]["spec"]
    assert clients["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "volumes", "restricted Pod Security Standard"),
        ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, "volumes[0].name", "operator's own"),
        ({"volumes": [{"name": "x"}]}, "volumes[0]", "exactly one volume type"),
        ({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, "volumeMounts", "names a volume of volumes"),
        (
            {"volumes": [{"name": "x", "emptyDir": {}}], "volumeMounts": [{"name": "x", "mountPath": "/tmp/x"}]},
            "volumeMounts[0].mountPath",
            "outside the operator's own",
        ),
        ({"volumeMounts": [{"name": "output", "mountPath": "/x"}]}, "volumeMounts[0].name", "mounted already"),
    ],
)
def test_pod_template_fields_that_would_break_the_pod_are_refused_naming_the_field(
    settings: dict, field: str, words: str
) -> None:
    with pytest.raises(JobInvalid) as raised:
        parse_job(job(clients=settings))
    assert raised.value.errors[0].path == f"spec.clients.{field}" and words in raised.value.errors[0].message


@pytest.mark.parametrize("component", ["server", "clients"])
@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"volumes": [{"name": "keys", "emptyDir": {}}]}, "volumes[0].name", "operator's own"),
        ({"volumeMounts": [{"name": "keys", "mountPath": "/x"}]}, "volumeMounts[0].name", "mounted already"),
        *(
            (
                {"volumes": [{"name": "x", "emptyDir": {}}], "volumeMounts": [{"name": "x", "mountPath": path}]},
                "volumeMounts[0].mountPath",
                "outside the operator's own",
            )
            for path in (contract.TLS_DIR, contract.CLIENT_KEYS_DIR, contract.KEYS_ROOT, contract.TLS_DIR + "/ca.crt")
        ),
    ],
)
def test_a_pod_template_can_neither_replace_nor_shadow_the_jobs_keys(
    component: str, settings: dict, field: str, words: str
) -> None:
    with pytest.raises(JobInvalid) as raised:
        parse_job(job(**{component: settings}))
    assert raised.value.errors[0].path == f"spec.{component}.{field}" and words in raised.value.errors[0].message


def test_the_keys_the_output_and_data_volumes_and_a_template_live_together_in_the_pods() -> None:
    """Issue 12's keys and issue 13's volumes and template fields, in one job: every operator mount
    stays where it was, read-only where it must be, and the pods stay valid and restricted."""
    parsed = parse_job(
        job(output={"claimName": "out"}, data={"claimName": "data"}, server=POD_TEMPLATE, clients=POD_TEMPLATE)
    )
    server = builders.server_deployment(parsed, SETTINGS)
    clients = builders.client_statefulset(parsed, SETTINGS)
    for manifest, secret, keys_at in (
        (server, builders.server_secret_name("digits-fedavg"), contract.TLS_DIR),
        (clients, builders.clients_secret_name("digits-fedavg"), contract.CLIENT_KEYS_DIR),
    ):
        assert strict_errors(manifest) == [], manifest["kind"]
        pod = manifest["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[contract.KEYS_VOLUME]["secret"] == {"secretName": secret, "defaultMode": 0o440}
        assert "certs" in volumes  # the user's own
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts[keys_at] == {"name": contract.KEYS_VOLUME, "mountPath": keys_at, "readOnly": True}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    server_volumes = {v["name"]: v for v in server["spec"]["template"]["spec"]["volumes"]}
    assert server_volumes["output"]["persistentVolumeClaim"] == {"claimName": "out"}
    assert server_volumes[contract.FINAL_VOLUME]["configMap"]["optional"] is True
    client_volumes = {v["name"]: v for v in clients["spec"]["template"]["spec"]["volumes"]}
    assert client_volumes["data"]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}


def test_every_child_is_valid_for_the_api_server_strict_schema() -> None:
    parsed = parse_job(job(output={"claimName": "out"}, data={"claimName": "data"}))
    manifests = [*builders.all_children(parsed, SETTINGS), builders.final_status_config_map(parsed, "{}")]
    for manifest in manifests:
        assert strict_errors(manifest) == [], manifest["kind"]
    broken = builders.server_deployment(parsed, SETTINGS)
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert strict_errors(broken)  # the check sees an unknown field
