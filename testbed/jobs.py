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
