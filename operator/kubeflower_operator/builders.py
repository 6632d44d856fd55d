"""A job's children as plain manifest dicts, built by pure functions from the validated spec.

The operator creates what these return (after `kopf.adopt`) and `kubeflower render` prints it. The
containers' commands and environment values come from the core (`kubeflower.core.contract` and
`kubeflower.core.environment`), which `kubeflower run` uses directly for its local processes.
Every pod meets the "restricted" Pod Security Standard.
"""

from __future__ import annotations

import base64
from typing import Any

from kubeflower.core import contract, environment, keys
from kubeflower.core.api import EnvVar, FederatedTrainingJob, PodSettings, ServiceType
from kubeflower.core.environment import CLIENTS, SERVER, clients_name, server_name
from kubeflower_operator.settings import Settings

Manifest = dict[str, Any]

CLIENT_CONTAINER = "client"
WARM_CLIENT_MEMORY_REQUEST = "1Gi"
"""A warm client pod's default memory request: SuperNode and SuperExec (about 0.26 GB), the fork
server holding torch and Flower (about 0.5 GB) and the message's forked child (its own pages only)."""
MANAGED_BY = "kubeflower-operator"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (Kubernetes 1.21+): selects one namespace by name."""


def selector_labels(job_name: str, component: str) -> dict[str, str]:
    return {contract.JOB_LABEL: job_name, contract.COMPONENT_LABEL: component}


def labels(job_name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubeflower",
        "app.kubernetes.io/instance": job_name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "kubeflower",
        **selector_labels(job_name, component),
    }


def label_selector(job_name: str, component: str) -> str:
    """The selector string (`kubectl get -l`, the scale subresource's status.selector)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(job_name, component).items())


def _metadata(job: FederatedTrainingJob, name: str, component: str) -> Manifest:
    meta: Manifest = {"name": name, "labels": labels(job.metadata.name, component)}
    if job.metadata.namespace:
        meta["namespace"] = job.metadata.namespace
    return meta


def _env(values: dict[str, str]) -> list[Manifest]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _user_env(env: list[EnvVar] | None) -> list[Manifest]:
    return [e.wire() for e in env or []]


KEYS_VOLUME = "keys"
KEYS_MODE = 0o440
"""The key files: readable by the pod's user and group (fsGroup), by nobody else, never writable."""


def server_secret_name(job_name: str) -> str:
    """The server's keys: the job's CA certificate, the server certificate and key, the clients' public keys."""
    return f"{job_name}-server-tls"


def clients_secret_name(job_name: str) -> str:
    """The clients' keys: the job's CA certificate and one private key per client ordinal."""
    return f"{job_name}-client-keys"


def _keys_volume(secret: str) -> Manifest:
    return {"name": KEYS_VOLUME, "secret": {"secretName": secret, "defaultMode": KEYS_MODE}}


def _keys_mount(path: str) -> Manifest:
    return {"name": KEYS_VOLUME, "mountPath": path, "readOnly": True}


def _container(
    job: FederatedTrainingJob, name: str, command: list[str], env: list[Manifest], settings: PodSettings, app: Settings
) -> Manifest:
    container: Manifest = {
        "name": name,
        "image": job.spec.image or app.image,
        "imagePullPolicy": app.image_pull_policy,
        "command": command,
        # The user's variables first, the contract's last: on a duplicate name the last one wins.
        "env": _user_env(settings.env) + env,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": v, "mountPath": p} for v, p in contract.POD_FOLDERS.items()],
    }
    if settings.resources is not None:
        container["resources"] = settings.resources.wire()
    return container


def _pod_spec(container: Manifest, settings: PodSettings, app: Settings) -> Manifest:
    spec: Manifest = {
        "containers": [container],
        "volumes": [{"name": v, "emptyDir": {}} for v in contract.POD_FOLDERS],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": app.run_as_user,
            "runAsGroup": app.run_as_user,
            "fsGroup": app.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The workload never talks to the Kubernetes API: no token, no service-link variables.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
    }
    for key, value in (
        ("nodeSelector", settings.node_selector),
        ("tolerations", [t.wire() for t in settings.tolerations or []]),
        ("affinity", settings.affinity.wire() if settings.affinity else None),
    ):
        if value:
            spec[key] = value
    return spec


def server_deployment(job: FederatedTrainingJob, settings: Settings) -> Manifest:
    """One server pod. `Recreate`: two SuperLinks for one job must never overlap."""
    name = server_name(job.metadata.name)
    container = _container(
        job, SERVER, list(contract.SERVER_COMMAND), _env(environment.server_environment(job)), job.spec.server, settings
    )
    pod_spec = _pod_spec(container, job.spec.server, settings)
    if job.spec.security.enabled:
        container["volumeMounts"].append(_keys_mount(contract.TLS_DIR))
        pod_spec["volumes"].append(_keys_volume(server_secret_name(job.metadata.name)))
    container["ports"] = [
        {"name": "flower", "containerPort": contract.SUPERLINK_PORT, "protocol": "TCP"},
        {"name": "status", "containerPort": contract.STATUS_PORT, "protocol": "TCP"},
    ]
    probe = {"httpGet": {"path": "/healthz", "port": "status"}, "periodSeconds": 5, "failureThreshold": 3}
    container["readinessProbe"] = probe
    container["livenessProbe"] = {**probe, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 6}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(job, name, SERVER),
        "spec": {
            "replicas": 0 if job.spec.run_policy.suspend else 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(job.metadata.name, SERVER)},
            "template": {
                "metadata": {"labels": labels(job.metadata.name, SERVER)},
                "spec": pod_spec,
            },
        },
    }


def server_service(job: FederatedTrainingJob, fleet: bool = True) -> Manifest:
    """The server's Service; `fleet=False` (a finished job): the status port alone."""
    ports = [
        {"name": "flower", "port": contract.SUPERLINK_PORT, "targetPort": "flower", "protocol": "TCP"},
        {"name": "status", "port": contract.STATUS_PORT, "targetPort": "status", "protocol": "TCP"},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, server_name(job.metadata.name), SERVER),
        "spec": {
            "type": job.spec.service.type.value,
            "selector": selector_labels(job.metadata.name, SERVER),
            "ports": ports if fleet else ports[1:],
        },
    }


def server_network_policy(job: FederatedTrainingJob, settings: Settings) -> Manifest:
    """Who may reach the server pod: made for every service type, before the server Deployment.

    - The Flower port (the front proxy, which passes only the Fleet API): from the job's own client
      pods; for NodePort and LoadBalancer jobs also from `networkPolicy.fleetFrom` (default: from
      everywhere, since the clients then live outside the cluster).
    - The status port (read-only status document and metrics): from the operator's namespace and
      the namespaces `networkPolicy.monitoringNamespaceSelector` selects.
    - Nothing else. Egress is not restricted: the server reaches nothing but loopback by itself,
      and a user's ServerApp may download what it needs.
    """
    name = job.metadata.name
    policy = job.spec.network_policy
    fleet_from: list[Manifest] = [{"podSelector": {"matchLabels": selector_labels(name, CLIENTS)}}]
    fleet_rule: Manifest = {"ports": [{"port": contract.SUPERLINK_PORT, "protocol": "TCP"}]}
    if job.spec.service.type == ServiceType.CLUSTER_IP:
        fleet_rule["from"] = fleet_from
    elif policy.fleet_from:
        fleet_rule["from"] = fleet_from + [peer.wire() for peer in policy.fleet_from]
    status_from: list[Manifest] = [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.namespace}}}]
    if policy.monitoring_namespace_selector is not None:
        status_from.append({"namespaceSelector": policy.monitoring_namespace_selector.wire()})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, server_name(name), SERVER),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name, SERVER)},
            "policyTypes": ["Ingress"],
            "ingress": [
                fleet_rule,
                {"from": status_from, "ports": [{"port": contract.STATUS_PORT, "protocol": "TCP"}]},
            ],
        },
    }


def clients_network_policy(job: FederatedTrainingJob) -> Manifest:
    """The client pods serve nothing (no ingress) and reach only their server's Flower port and
    DNS, plus the user's `networkPolicy.clientEgress` rules (a data set's download, say)."""
    name = job.metadata.name
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    egress: list[Manifest] = [
        {
            "to": [{"podSelector": {"matchLabels": selector_labels(name, SERVER)}}],
            "ports": [{"port": contract.SUPERLINK_PORT, "protocol": "TCP"}],
        },
        {"to": [{"namespaceSelector": {}}], "ports": dns_ports},
        *(rule.wire() for rule in job.spec.network_policy.client_egress or []),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, clients_name(name), CLIENTS),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name, CLIENTS)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def key_secrets(
    job: FederatedTrainingJob, tls: keys.ServerTLS, client_keys: dict[int, keys.ClientKey]
) -> list[Manifest]:
    """The job's two Secrets (server first): what each pod mounts read-only, nothing more.

    The server gets the CA certificate, its own certificate and key, and the clients' public keys
    (to register); the clients get the CA certificate and the private keys, one per ordinal (a
    StatefulSet has one pod template: every client pod mounts them all and uses its own). No
    Secret holds the CA's private key: it signed the server certificate and was thrown away.
    """
    name = job.metadata.name
    server_data, client_data = key_files(client_keys)
    server_data.update(tls.files())
    client_data[keys.CA_CERT] = tls.ca_cert
    return [
        _secret(job, server_secret_name(name), SERVER, server_data),
        _secret(job, clients_secret_name(name), CLIENTS, client_data),
    ]


def key_files(client_keys: dict[int, keys.ClientKey]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The clients' keys as Secret entries: (the server's public keys, the clients' private keys)."""
    public = {keys.client_public_key_file(i): pair.public_pem for i, pair in client_keys.items()}
    private = {keys.client_private_key_file(i): pair.private_openssh for i, pair in client_keys.items()}
    return public, private


def secret_data(files: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(data).decode() for name, data in sorted(files.items())}


def _secret(job: FederatedTrainingJob, name: str, component: str, files: dict[str, bytes]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(job, name, component),
        "type": "Opaque",
        "data": secret_data(files),
    }


def client_env(job: FederatedTrainingJob, partitions: int | None = None) -> list[Manifest]:
    """The client environment's entries: the job's values, and the pod's name and CPUs from the
    downward API."""
    values = environment.client_environment(job, partitions)
    pod_name = {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    env = [pod_name, *_env(values)]
    if contract.ENV_THREADS not in {e.wire()["name"] for e in job.spec.clients.env or []}:  # the user's value wins
        cpus = {
            "containerName": CLIENT_CONTAINER,
            "resource": _cpu_resource(job),
            "divisor": "1",
        }  # whole CPUs, rounded up
        env.append({"name": contract.ENV_THREADS, "valueFrom": {"resourceFieldRef": cpus}})
    return env


def _cpu_resource(job: FederatedTrainingJob) -> str:
    """The client container's CPUs, as the downward API reads them: the limit, else the request
    (clusters that set no CPU limits), else `limits.cpu`, which then reads the node's CPUs."""
    resources: Manifest = job.spec.clients.resources.wire() if job.spec.clients.resources else {}
    if "cpu" not in resources.get("limits", {}) and "cpu" in resources.get("requests", {}):
        return "requests.cpu"
    return "limits.cpu"


def client_replicas(job: FederatedTrainingJob) -> int:
    return 0 if job.spec.run_policy.suspend else job.spec.clients.replicas


def client_spread(job: FederatedTrainingJob) -> list[Manifest]:
    """Where the client pods go relative to each other: a federation models many sites, so by
    default one pod per node as far as the nodes allow. Soft (`ScheduleAnyway`), so a one-node
    cluster still runs every client. The user's own `topologySpreadConstraints` (even `[]`) replace
    it, and so does an affinity that places pods by other pods (podAffinity, podAntiAffinity), which
    says the same thing in the user's words; a nodeAffinity or nodeSelector keeps it (the spread is
    then over the nodes they allow)."""
    clients = job.spec.clients
    if clients.topology_spread_constraints is not None:
        return [c.wire() for c in clients.topology_spread_constraints]
    if clients.affinity and ({"podAffinity", "podAntiAffinity"} & set(clients.affinity.wire())):
        return []
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(job.metadata.name, CLIENTS)},
        }
    ]


def client_statefulset(job: FederatedTrainingJob, settings: Settings, partitions: int | None = None) -> Manifest:
    """The clients: a StatefulSet, so each pod's ordinal is a stable partition id."""
    name = clients_name(job.metadata.name)
    container = _container(
        job, CLIENT_CONTAINER, list(contract.CLIENT_COMMAND), client_env(job, partitions), job.spec.clients, settings
    )
    resources = container.setdefault("resources", {})
    if job.spec.clients.warm_client_apps and not any("memory" in resources.get(k, {}) for k in ("requests", "limits")):
        resources.setdefault("requests", {})["memory"] = WARM_CLIENT_MEMORY_REQUEST
    if not resources:
        del container["resources"]
    pod_spec = _pod_spec(container, job.spec.clients, settings)
    if job.spec.security.enabled:
        container["volumeMounts"].append(_keys_mount(contract.CLIENT_KEYS_DIR))
        pod_spec["volumes"].append(_keys_volume(clients_secret_name(job.metadata.name)))
    spread = client_spread(job)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(job, name, CLIENTS),
        "spec": {
            "replicas": client_replicas(job),
            # Clients are interchangeable peers: start and stop them all at once, not one by one.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(job.metadata.name, CLIENTS)},
            "template": {
                "metadata": {"labels": labels(job.metadata.name, CLIENTS)},
                "spec": pod_spec,
            },
        },
    }


def server_children(job: FederatedTrainingJob, settings: Settings) -> list[Manifest]:
    """What is created first, in this order: the NetworkPolicies (so no server or client pod is
    ever without one), then the server and the way to reach it. The job's Secrets come before all
    of these (`jobkeys`), made outside the pure plan: they hold fresh keys."""
    return [
        server_network_policy(job, settings),
        clients_network_policy(job),
        server_deployment(job, settings),
        server_service(job),
    ]


def all_children(job: FederatedTrainingJob, settings: Settings, partitions: int | None = None) -> list[Manifest]:
    return [*server_children(job, settings), client_statefulset(job, settings, partitions)]
