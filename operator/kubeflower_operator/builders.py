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
SERVER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}
"""The server's defaults, so that it is not BestEffort (the first pod evicted): the SuperLink and
the ServerApp with torch (about 0.6 GB), plus the clients' models in flight each round (ResNet-18:
45 MB a client). No CPU limit: aggregation bursts, and throttling it only slows every round. Each
resource the user names in `spec.server.resources` (requests or limits) replaces its defaults."""


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


KEYS_MODE = 0o440
"""The key files: readable by the pod's user and group (fsGroup), by nobody else, never writable."""


def server_secret_name(job_name: str) -> str:
    """The server's keys: the job's CA certificate, the server certificate and key, the clients' public keys."""
    return f"{job_name}-server-tls"


def clients_secret_name(job_name: str) -> str:
    """The clients' keys: the job's CA certificate and one private key per client ordinal."""
    return f"{job_name}-client-keys"


def certificate_name(job_name: str) -> str:
    """The job's cert-manager Certificate (`spec.security.issuerRef`): the server's certificate."""
    return f"{job_name}-server"


def certificate_secret_name(job_name: str) -> str:
    """Where cert-manager writes the server's certificate and key and the issuer's CA certificate."""
    return f"{job_name}-server-cert"


CERTIFICATE_FILES = (keys.CA_CERT, keys.SERVER_CERT, keys.SERVER_KEY)
"""What the server takes from the certificate's Secret; the clients take `ca.crt` alone."""


def _keys_volume(job: FederatedTrainingJob, secret: str, certificate_files: tuple[str, ...]) -> Manifest:
    """The pod's keys: the job's own Secret, and with an issuer (`spec.security.issuerRef`) the
    named files of cert-manager's Secret beside them in one projected folder (the clients' never
    holds the server's tls.key)."""
    if job.spec.security.issuer_ref is None:
        return {"name": contract.KEYS_VOLUME, "secret": {"secretName": secret, "defaultMode": KEYS_MODE}}
    issued: Manifest = {
        "name": certificate_secret_name(job.metadata.name),
        "items": [{"key": name, "path": name} for name in certificate_files],
    }
    if keys.SERVER_KEY in certificate_files:
        # The server starts even where the issuer wrote no ca.crt (ACME), to say so in its log;
        # the clients, created once it is ready, have nothing to do without it.
        issued["optional"] = True
    sources = [{"secret": {"name": secret}}, {"secret": issued}]
    return {"name": contract.KEYS_VOLUME, "projected": {"sources": sources, "defaultMode": KEYS_MODE}}


def _keys_mount(path: str) -> Manifest:
    return {"name": contract.KEYS_VOLUME, "mountPath": path, "readOnly": True}


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
        "volumeMounts": [{"name": v, "mountPath": p} for v, p in contract.POD_FOLDERS.items()]
        + [m.wire() for m in settings.volume_mounts or []],
    }
    if settings.resources is not None:
        container["resources"] = settings.resources.wire()
    return container


def _volumes(replace: dict[str, Manifest]) -> list[Manifest]:
    """The pod's volumes: emptyDirs, but those the job names (its output volume) in their place."""
    return [replace.get(v) or {"name": v, "emptyDir": {}} for v in contract.POD_FOLDERS]


def _pod_spec(container: Manifest, settings: PodSettings, app: Settings, volumes: list[Manifest]) -> Manifest:
    """The pod spec: the user's template fields (`PodSettings`) under the operator's own, which win:
    the user's volumes come after ours (names and paths checked apart by the API model), and the
    security settings are always ours."""
    spec: Manifest = {
        "containers": [container],
        "volumes": volumes + [v.wire() for v in settings.volumes or []],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": app.run_as_user,
            "runAsGroup": app.run_as_user,
            "fsGroup": app.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The workload never talks to the Kubernetes API: no token, unless the user names a service
        # account on purpose (for what they add: a sidecar, workload identity); no service-link variables.
        "automountServiceAccountToken": settings.service_account_name is not None,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
    }
    pull_secrets = [s.wire() for s in settings.image_pull_secrets or []]
    for key, value in (
        ("nodeSelector", settings.node_selector),
        ("tolerations", [t.wire() for t in settings.tolerations or []]),
        ("affinity", settings.affinity.wire() if settings.affinity else None),
        ("imagePullSecrets", pull_secrets),
        ("serviceAccountName", settings.service_account_name),
        ("priorityClassName", settings.priority_class_name),
        ("runtimeClassName", settings.runtime_class_name),
        ("topologySpreadConstraints", [c.wire() for c in settings.topology_spread_constraints or []]),
    ):
        if value:
            spec[key] = value
    return spec


def _template_metadata(job: FederatedTrainingJob, component: str, settings: PodSettings) -> Manifest:
    """The pod template's labels (the user's, then ours: ours win) and the user's annotations."""
    meta: Manifest = {"labels": {**(settings.labels or {}), **labels(job.metadata.name, component)}}
    if settings.annotations:
        meta["annotations"] = dict(settings.annotations)
    return meta


def with_defaults(resources: Manifest, defaults: dict[str, dict[str, str]]) -> Manifest:
    """`resources` with the defaults of every resource it names in neither requests nor limits
    (a default next to the user's own value could contradict it: a request above the limit)."""
    named = {name for kind in ("requests", "limits") for name in resources.get(kind) or {}}
    merged = {kind: dict(values) for kind, values in resources.items()}
    for kind, values in defaults.items():
        for name, value in values.items():
            if name not in named:
                merged.setdefault(kind, {})[name] = value
    return merged


def server_volumes(job: FederatedTrainingJob) -> dict[str, Manifest]:
    """The server's volumes that are not emptyDirs: its output volume (`spec.output`), when set."""
    output = job.spec.output
    return {"output": output.volume("output")} if output is not None else {}


def _server_pod_volumes(job: FederatedTrainingJob) -> list[Manifest]:
    """The emptyDirs (the output volume in its place, when set) and the job's final status,
    optional: the ConfigMap exists only once the job has finished."""
    final = {"name": server_name(job.metadata.name), "optional": True}
    return [*_volumes(server_volumes(job)), {"name": contract.FINAL_VOLUME, "configMap": final}]


def final_status_config_map(job: FederatedTrainingJob, document: str) -> Manifest:
    """The job's final status document, for a server pod re-created after the end (it serves this
    instead of running the federation again, with or without an output volume)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, server_name(job.metadata.name), SERVER),
        "data": {contract.FINAL_STATUS_KEY: document},
    }


def results_location(job: FederatedTrainingJob) -> str:
    """Where the job's results are, in words (`status.results`)."""
    output = job.spec.output
    where = output.describe() if output is not None else "the server pod's emptyDir (lost with the pod)"
    return f"{where}, mounted at {contract.OUTPUT_DIR} in the server pod"


def server_deployment(job: FederatedTrainingJob, settings: Settings) -> Manifest:
    """One server pod. `Recreate`: two SuperLinks for one job must never overlap."""
    name = server_name(job.metadata.name)
    container = _container(
        job, SERVER, list(contract.SERVER_COMMAND), _env(environment.server_environment(job)), job.spec.server, settings
    )
    container["resources"] = with_defaults(container.get("resources") or {}, SERVER_RESOURCES)
    container["volumeMounts"].append(
        {"name": contract.FINAL_VOLUME, "mountPath": contract.FINAL_STATUS_DIR, "readOnly": True}
    )
    volumes = _server_pod_volumes(job)
    if job.spec.security.enabled:
        container["volumeMounts"].append(_keys_mount(contract.TLS_DIR))
        volumes.append(_keys_volume(job, server_secret_name(job.metadata.name), CERTIFICATE_FILES))
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
                "metadata": _template_metadata(job, SERVER, job.spec.server),
                "spec": _pod_spec(container, job.spec.server, settings, volumes),
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
    status_rule = {"from": status_from, "ports": [{"port": contract.STATUS_PORT, "protocol": "TCP"}]}
    return _network_policy(job, server_name(name), SERVER, ingress=[fleet_rule, status_rule])


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
    return _network_policy(job, clients_name(name), CLIENTS, ingress=[], egress=egress)


def _network_policy(
    job: FederatedTrainingJob, name: str, component: str, ingress: list[Manifest], egress: list[Manifest] | None = None
) -> Manifest:
    """A NetworkPolicy for one component's pods: `ingress` always enforced (an empty list: none
    allowed); `egress` enforced only when given (None: egress not restricted)."""
    spec: Manifest = {
        "podSelector": {"matchLabels": selector_labels(job.metadata.name, component)},
        "policyTypes": ["Ingress"] if egress is None else ["Ingress", "Egress"],
        "ingress": ingress,
    }
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, name, component),
        "spec": spec,
    }


def key_secrets(
    job: FederatedTrainingJob, tls: keys.ServerTLS | None, client_keys: dict[int, keys.ClientKey]
) -> list[Manifest]:
    """The job's two Secrets (server first): what each pod mounts read-only, nothing more.

    The server gets the CA certificate, its own certificate and key, and the clients' public keys
    (to register); the clients get the CA certificate and the private keys, one per ordinal (a
    StatefulSet has one pod template: every client pod mounts them all and uses its own). No
    Secret holds the CA's private key: it signed the server certificate and was thrown away.
    `tls` None (a cert-manager issuer): the certificates are in cert-manager's Secret instead.
    """
    name = job.metadata.name
    server_data, client_data = key_files(client_keys)
    if tls is not None:
        server_data.update(tls.files())
        client_data[keys.CA_CERT] = tls.ca_cert
    return [
        _secret(job, server_secret_name(name), SERVER, server_data),
        _secret(job, clients_secret_name(name), CLIENTS, client_data),
    ]


def server_certificate(job: FederatedTrainingJob) -> Manifest:
    """The cert-manager Certificate (cert-manager.io/v1) of the server, for `spec.security.issuerRef`.

    The same names as the job's own server certificate (`environment.server_names`, loopback); an
    ECDSA P-256 key made anew at every renewal (`rotationPolicy: Always`); server authentication
    only. Its lifetime and renewal are the issuer's and cert-manager's defaults (90 days, renewed a
    third before the end)."""
    ref = job.spec.security.issuer_ref
    if ref is None:
        raise ValueError("server_certificate needs spec.security.issuerRef")
    names = list(dict.fromkeys([*environment.server_names(job), *keys.LOCAL_NAMES]))
    ips, dns = [n for n in names if keys.is_ip_address(n)], [n for n in names if not keys.is_ip_address(n)]
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": _metadata(job, certificate_name(job.metadata.name), SERVER),
        "spec": {
            "secretName": certificate_secret_name(job.metadata.name),
            "secretTemplate": {"labels": labels(job.metadata.name, SERVER)},
            "commonName": keys.common_name(names),
            "dnsNames": dns,
            "ipAddresses": ips,
            "usages": ["server auth", "digital signature"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
            "issuerRef": {"name": ref.name, "kind": ref.kind, "group": ref.group},
        },
    }


def certificate_secret(job: FederatedTrainingJob) -> Manifest:
    """cert-manager's Secret, made empty by the operator before the Certificate, so that it is the
    job's (owned by it, deleted with it): cert-manager fills a Secret that exists and keeps its
    owner, but never deletes the one it makes unless it runs with `--enable-certificate-owner-ref`.
    Its type is the one cert-manager writes (`kubernetes.io/tls`, which needs both entries)."""
    return {
        **_secret(
            job, certificate_secret_name(job.metadata.name), SERVER, {keys.SERVER_CERT: b"", keys.SERVER_KEY: b""}
        ),
        "type": "kubernetes.io/tls",
    }


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
    container["ports"] = [{"name": "health", "containerPort": contract.SUPERNODE_HEALTH_PORT, "protocol": "TCP"}]
    # The SuperNode's own gRPC health server: not ready until it serves; restarted when it stops answering.
    health = {"grpc": {"port": contract.SUPERNODE_HEALTH_PORT}, "timeoutSeconds": 5}
    container["readinessProbe"] = {**health, "periodSeconds": 5, "failureThreshold": 3}
    container["livenessProbe"] = {**health, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 6}
    resources = container.setdefault("resources", {})
    if job.spec.clients.warm_client_apps and not any("memory" in resources.get(k, {}) for k in ("requests", "limits")):
        resources.setdefault("requests", {})["memory"] = WARM_CLIENT_MEMORY_REQUEST
    if not resources:
        del container["resources"]
    data = job.spec.data
    if data is not None:  # the job's data volume in place of the emptyDir, read-only
        for mount in container["volumeMounts"]:
            if mount["name"] == "data":
                mount["readOnly"] = True
    volumes = _volumes({"data": data.volume("data", read_only=True)} if data else {})
    if job.spec.security.enabled:
        container["volumeMounts"].append(_keys_mount(contract.CLIENT_KEYS_DIR))
        volumes.append(_keys_volume(job, clients_secret_name(job.metadata.name), (keys.CA_CERT,)))
    pod_spec = _pod_spec(container, job.spec.clients, settings, volumes)
    pod_spec.pop("topologySpreadConstraints", None)  # the clients' own rule: `client_spread`
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
                "metadata": _template_metadata(job, CLIENTS, job.spec.clients),
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
