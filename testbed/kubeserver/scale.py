"""
The ``autoscaling/v1`` Scale subresource: ``kubectl scale`` reads and patches it.

It is a view of the object through the resource's scale paths (``specReplicasPath``,
``statusReplicasPath``, ``labelSelectorPath`` of a CRD; ``.spec.replicas`` etc. of the
built-in workloads). Writing it sets only the spec replicas path of the object.
"""

from typing import Any

from . import errors, jsonpath, selectors
from .resources import ResourceSpec


def scale_of(spec: ResourceSpec, obj: dict[str, Any]) -> dict[str, Any]:
    assert spec.scale is not None
    metadata = obj["metadata"]
    status: dict[str, Any] = {"replicas": _replicas(obj, spec.scale.status_replicas)}
    if spec.scale.label_selector:
        found, selector = jsonpath.find(obj, spec.scale.label_selector)
        if found and isinstance(selector, dict):
            status["selector"] = selectors.format_label_selector(selector)
        elif found and selector:
            status["selector"] = str(selector)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in metadata
        },
        "spec": {"replicas": _replicas(obj, spec.scale.spec_replicas)},
        "status": status,
    }


def apply_scale(spec: ResourceSpec, obj: dict[str, Any], desired: Any) -> dict[str, Any]:
    """The object with the replicas of the desired Scale (and its resourceVersion as a precondition)."""
    assert spec.scale is not None
    name = obj["metadata"]["name"]
    replicas = (desired.get("spec") or {}).get("replicas") if isinstance(desired, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid(
            spec.qualified, name, f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer"
        )
    jsonpath.assign(obj, spec.scale.spec_replicas, replicas)
    obj["metadata"]["resourceVersion"] = (desired.get("metadata") or {}).get("resourceVersion") or obj["metadata"][
        "resourceVersion"
    ]
    return obj


def _replicas(obj: dict[str, Any], path: str) -> int:
    found, value = jsonpath.find(obj, path)
    return value if found and isinstance(value, int) else 0
