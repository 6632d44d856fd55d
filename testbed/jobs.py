"""Job documents shared by the tests: one valid job and the catalogue of invalid ones."""

from __future__ import annotations

import copy
from typing import Any


def job(name: str = "digits-fedavg", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A valid digits job; keyword arguments replace top-level spec fields."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    body = {
        "apiVersion": "kubeflower.io/v1alpha1",
        "kind": "FederatedTrainingJob",
        "metadata": metadata,
        "spec": {"rounds": 3, "clients": {"replicas": 2}, "task": {"dataset": "digits"}},
    }
    body["spec"].update(spec)
    return body


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value

    return mutate


_DELETE = object()

_OWN_APP = [_set("spec.task", _DELETE), _set("spec.image", "me/app:1")]

# (id, mutations, the field path every layer must name)
INVALID: list[tuple[str, list[Any], str]] = [
    ("rounds-not-a-number", [_set("spec.rounds", "three")], "spec.rounds"),
    ("rounds-zero", [_set("spec.rounds", 0)], "spec.rounds"),
    ("replicas-negative", [_set("spec.clients.replicas", -1)], "spec.clients.replicas"),
    ("unknown-strategy", [_set("spec.strategy", {"name": "FedFoo"})], "spec.strategy.name"),
    (
        "min-clients-above-replicas",
        [_set("spec.strategy", {"minAvailableClients": 5})],
        "spec.strategy.minAvailableClients",
    ),
    ("both-task-and-app", [_set("spec.app", {"path": "/app"}), _set("spec.image", "me/app:1")], "spec.task"),
    ("neither-task-nor-app", [_set("spec.task", _DELETE)], "spec.task"),
    ("name-too-long", [_set("metadata.name", "a" * 45)], "metadata.name"),
    ("name-not-a-dns-label", [_set("metadata.name", "Digits_Job")], "metadata.name"),
    ("fraction-above-one", [_set("spec.strategy", {"fractionTrain": 1.5})], "spec.strategy.fractionTrain"),
    ("unknown-dataset", [_set("spec.task.dataset", "imagenet")], "spec.task.dataset"),
    (
        "dirichlet-alpha-zero",
        [_set("spec.task.partitioning", {"type": "dirichlet", "alpha": 0})],
        "spec.task.partitioning.alpha",
    ),
    (
        "parameter-of-another-strategy",
        [_set("spec.strategy", {"name": "FedAvg", "proximalMu": 0.1})],
        "spec.strategy.proximalMu",
    ),
    ("resnet-on-digits", [_set("spec.task.model", "resnet18")], "spec.task.model"),
    ("unknown-clean-policy", [_set("spec.runPolicy", {"cleanPolicy": "Sometimes"})], "spec.runPolicy.cleanPolicy"),
    ("unknown-service-type", [_set("spec.service", {"type": "Ingress"})], "spec.service.type"),
    ("app-without-image", [_set("spec.task", _DELETE), _set("spec.app", {"path": "/app"})], "spec.image"),
    (
        "app-sets-its-rounds",
        [
            _set("spec.task", _DELETE),
            _set("spec.image", "me/app:1"),
            _set("spec.app", {"path": "/app", "runConfig": {"num-server-rounds": 5}}),
        ],
        "spec.app.runConfig",
    ),
    ("bulyan-with-two-clients", [_set("spec.strategy", {"name": "Bulyan"})], "spec.strategy.name"),
    ("negative-learning-rate", [_set("spec.task.learningRate", -0.1)], "spec.task.learningRate"),
    ("fractional-epochs", [_set("spec.task.localEpochs", 1.5)], "spec.task.localEpochs"),
    (
        "output-claim-and-source",
        [_set("spec.output", {"claimName": "results", "source": {"csi": {"driver": "nfs.csi.k8s.io"}}})],
        "spec.output.claimName",
    ),
    ("output-neither", [_set("spec.output", {})], "spec.output.claimName"),
    # Pod template fields (issue 13): Kubernetes' own types, the restricted PSS's volume types, not
    # the operator's names or paths, every bound.
    (
        "volume-of-a-forbidden-type",
        [_set("spec.server.volumes", [{"name": "share", "nfs": {"server": "nas", "path": "/"}}])],
        "spec.server.volumes",
    ),
    ("volume-without-a-type", [_set("spec.clients.volumes", [{"name": "x"}])], "spec.clients.volumes[0]"),
    (
        "volume-with-two-types",
        [_set("spec.clients.volumes", [{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}])],
        "spec.clients.volumes[0]",
    ),
    (
        "volume-takes-the-operators-name",
        [_set("spec.server.volumes", [{"name": "output", "emptyDir": {}}])],
        "spec.server.volumes[0].name",
    ),
    (
        "volume-field-unknown",
        [_set("spec.server.volumes", [{"name": "x", "emptyDir": {"size": "1Gi"}}])],
        "spec.server.volumes[0].emptyDir.size",
    ),
    (
        "volume-size-not-a-quantity",
        [_set("spec.server.volumes", [{"name": "x", "emptyDir": {"sizeLimit": "huge"}}])],
        "spec.server.volumes[0].emptyDir.sizeLimit",
    ),
    (
        "volumes-too-many",
        [_set("spec.clients.volumes", [{"name": f"v{i}", "emptyDir": {}} for i in range(65)])],
        "spec.clients.volumes",
    ),
    (
        "mount-of-the-operators-volume",
        [
            _set("spec.clients.volumes", [{"name": "x", "emptyDir": {}}]),
            _set("spec.clients.volumeMounts", [{"name": "data", "mountPath": "/d"}]),
        ],
        "spec.clients.volumeMounts[0].name",
    ),
    (
        "mount-inside-the-operators-path",
        [
            _set("spec.server.volumes", [{"name": "x", "emptyDir": {}}]),
            _set("spec.server.volumeMounts", [{"name": "x", "mountPath": "/tmp/x"}]),
        ],
        "spec.server.volumeMounts[0].mountPath",
    ),
    (
        "mount-of-no-volume",
        [_set("spec.server.volumeMounts", [{"name": "x", "mountPath": "/x"}])],
        "spec.server.volumeMounts",
    ),
    (
        "pull-secret-unknown-field",
        [_set("spec.server.imagePullSecrets", [{"name": "regcred", "namespace": "other"}])],
        "spec.server.imagePullSecrets[0].namespace",
    ),
    ("service-account-too-long", [_set("spec.server.serviceAccountName", "a" * 254)], "spec.server.serviceAccountName"),
    ("priority-class-empty", [_set("spec.clients.priorityClassName", "")], "spec.clients.priorityClassName"),
    ("pod-label-too-long", [_set("spec.clients.labels", {"team": "t" * 64})], "spec.clients.labels.team"),
    ("pod-annotation-not-text", [_set("spec.server.annotations", {"a": 1})], "spec.server.annotations.a"),
    (
        "output-source-of-a-forbidden-type",
        [_set("spec.output", {"source": {"hostPath": {"path": "/srv"}}})],
        "spec.output.source",
    ),
    ("output-source-without-a-type", [_set("spec.output", {"source": {}})], "spec.output.source"),
    ("data-claim-name-too-long", [_set("spec.data", {"claimName": "c" * 254})], "spec.data.claimName"),
    # No coercion: what the API server refuses, `kubeflower validate` refuses too.
    ("rounds-as-a-string", [_set("spec.rounds", "3")], "spec.rounds"),
    ("replicas-as-a-float", [_set("spec.clients.replicas", 2.0)], "spec.clients.replicas"),
    ("epochs-as-a-boolean", [_set("spec.task.localEpochs", True)], "spec.task.localEpochs"),
    ("warm-as-a-string", [_set("spec.clients.warmClientApps", "yes")], "spec.clients.warmClientApps"),
    # A maximum on every number: a value past it overflows a computation or wedges the job.
    (
        "deadline-overflows",
        [_set("spec.runPolicy.activeDeadlineSeconds", 300000000000)],
        "spec.runPolicy.activeDeadlineSeconds",
    ),
    (
        "ttl-as-a-huge-float",
        [_set("spec.runPolicy.ttlSecondsAfterFinished", 1e14)],
        "spec.runPolicy.ttlSecondsAfterFinished",
    ),
    (
        "ttl-past-ten-years",
        [_set("spec.runPolicy.ttlSecondsAfterFinished", 10**9)],
        "spec.runPolicy.ttlSecondsAfterFinished",
    ),
    ("backoff-limit-huge", [_set("spec.runPolicy.backoffLimit", 10**6)], "spec.runPolicy.backoffLimit"),
    ("rounds-too-many", [_set("spec.rounds", 100001)], "spec.rounds"),
    ("replicas-too-many", [_set("spec.clients.replicas", 1001)], "spec.clients.replicas"),
    ("seed-too-large", [_set("spec.task.seed", 2**40)], "spec.task.seed"),
    (
        "alpha-too-large",
        [_set("spec.task.partitioning", {"type": "dirichlet", "alpha": 1e9})],
        "spec.task.partitioning.alpha",
    ),
    ("eta-too-large", [_set("spec.strategy", {"name": "FedAdam", "eta": 1e6})], "spec.strategy.eta"),
    # Kubernetes' own types, checked by their generated schemas and the quantity grammar.
    ("cpu-lots", [_set("spec.clients.resources", {"limits": {"cpu": "lots"}})], "spec.clients.resources.limits.cpu"),
    (
        "memory-negative",
        [_set("spec.clients.resources", {"limits": {"memory": -1}})],
        "spec.clients.resources.limits.memory",
    ),
    (
        "memory-in-gigabits",
        [_set("spec.server.resources", {"requests": {"memory": "1.5Gb"}})],
        "spec.server.resources.requests.memory",
    ),
    (
        "resources-unknown-field",
        [_set("spec.server.resources", {"maximum": {"cpu": 1}})],
        "spec.server.resources.maximum",
    ),
    (
        "value-from-bogus",
        [_set("spec.clients.env", [{"name": "A", "valueFrom": {"bogus": 1}}])],
        "spec.clients.env[0].valueFrom.bogus",
    ),
    ("env-without-name", [_set("spec.clients.env", [{"value": "1"}])], "spec.clients.env[0].name"),
    ("env-name-with-equals", [_set("spec.server.env", [{"name": "A=B", "value": "1"}])], "spec.server.env[0].name"),
    ("env-value-a-number", [_set("spec.server.env", [{"name": "A", "value": 1}])], "spec.server.env[0].value"),
    (
        "env-too-many",
        [_set("spec.clients.env", [{"name": f"V{i}", "value": "1"} for i in range(129)])],
        "spec.clients.env",
    ),
    ("affinity-bogus", [_set("spec.server.affinity", {"bogus": True})], "spec.server.affinity.bogus"),
    (
        "affinity-term-without-key",
        [
            _set(
                "spec.clients.affinity",
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"operator": "In"}]}]
                        }
                    }
                },
            )
        ],
        "spec.clients.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key",
    ),
    (
        "toleration-unknown-field",
        [_set("spec.clients.tolerations", [{"key": "gpu", "tolerance": 1}])],
        "spec.clients.tolerations[0].tolerance",
    ),
    (
        "toleration-seconds-text",
        [_set("spec.clients.tolerations", [{"key": "gpu", "tolerationSeconds": "60"}])],
        "spec.clients.tolerations[0].tolerationSeconds",
    ),
    (
        "tolerations-too-many",
        [_set("spec.clients.tolerations", [{"key": f"k{i}"} for i in range(65)])],
        "spec.clients.tolerations",
    ),
    (
        "spread-bogus",
        [_set("spec.clients.topologySpreadConstraints", [{"maxSkew": 1, "bogus": 1}])],
        "spec.clients.topologySpreadConstraints[0].bogus",
    ),
    (
        "node-selector-value-too-long",
        [_set("spec.clients.nodeSelector", {"zone": "z" * 64})],
        "spec.clients.nodeSelector.zone",
    ),
    ("node-selector-not-text", [_set("spec.clients.nodeSelector", {"gpu": True})], "spec.clients.nodeSelector.gpu"),
    ("invalid-image", [_set("spec.image", "Not An Image!")], "spec.image"),
    ("empty-image", [_set("spec.image", "")], "spec.image"),
    # The contract's variables are the operator's.
    (
        "reserved-partition-env",
        [_set("spec.clients.env", [{"name": "KUBEFLOWER_PARTITION_ID", "value": "0"}])],
        "spec.clients.env[0].name",
    ),
    (
        "reserved-flower-env",
        [_set("spec.server.env", [{"name": "FLWR_HOME", "value": "/tmp"}])],
        "spec.server.env[0].name",
    ),
    (
        "run-config-key-too-long",
        [
            _set("spec.task", _DELETE),
            _set("spec.image", "me/app:1"),
            _set("spec.app", {"path": "/app", "runConfig": {"k" * 318: 1}}),
        ],
        "spec.app.runConfig",
    ),
    (
        "security-off-with-node-port",
        [_set("spec.security", {"enabled": False}), _set("spec.service", {"type": "NodePort"})],
        "spec.security.enabled",
    ),
    (
        "security-off-with-load-balancer",
        [_set("spec.security", {"enabled": False}), _set("spec.service", {"type": "LoadBalancer"})],
        "spec.security.enabled",
    ),
    (
        "issuer-with-security-off",
        [_set("spec.security", {"enabled": False, "issuerRef": {"name": "team-ca"}})],
        "spec.security.issuerRef",
    ),
    ("app-under-a-pod-volume", [*_OWN_APP, _set("spec.app", {"path": "/tmp/app"})], "spec.app.path"),
    (
        "app-sets-its-own-rounds-key",
        [*_OWN_APP, _set("spec.app", {"path": "/app", "roundsKey": "rounds", "runConfig": {"rounds": 2}})],
        "spec.app.runConfig",
    ),
    (
        "strategy-for-an-own-app",
        [*_OWN_APP, _set("spec.app", {"path": "/app"}), _set("spec.strategy", {"name": "FedProx", "proximalMu": 0.1})],
        "spec.strategy",
    ),
]


def invalid_job(mutations: list[Any], name: str = "bad-job") -> dict[str, Any]:
    doc = copy.deepcopy(job(name))
    for mutate in mutations:
        mutate(doc)
    return doc
