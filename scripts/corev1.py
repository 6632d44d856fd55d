"""Generate kubeflower/core/corev1.json: the Kubernetes core schemas the job's pod fields carry.

`env`, `tolerations`, `affinity`, `resources`, `topologySpreadConstraints`, `volumes`, `volumeMounts`
and `imagePullSecrets`, and the job's NetworkPolicy fields (`networkPolicy.fleetFrom`,
`clientEgress`, `monitoringNamespaceSelector`) are Kubernetes' own types (EnvVar, Toleration,
Affinity, ResourceRequirements, TopologySpreadConstraint, Volume, VolumeMount, LocalObjectReference,
LabelSelector, NetworkPolicyPeer, NetworkPolicyEgressRule). Their schemas
are generated here from the Kubernetes Python client's models (pydantic models, themselves
generated from the API server's OpenAPI document of the client's version, `kubernetes` in
pyproject.toml), not written by hand, and committed, so the core (which does not depend on the
client) builds its models and the CRD from them (`kubeflower.core.corev1`). `make crd` runs this;
a test fails when the committed file differs from what the installed client gives.

What the client's schemas leave out is added here, in one place: a maximum on every string, list,
map and integer (bounded input, and what keeps CEL's cost estimate within the API server's budget),
quantities checked against Kubernetes' quantity grammar, a port (an IntOrString: 1-65535 or a
port's name), an environment variable's name without `=`, and only the volume types the restricted
Pod Security Standard allows (every pod of a job meets it; `VolumeSource` is a Volume without its
name: `spec.output.source`, `spec.data.source`). Descriptions are dropped: the CRD must stay small
enough for client-side apply.
"""

from __future__ import annotations

import functools
import json
import operator
import sys
from typing import Any

from kubeflower.core.corev1 import RESTRICTED_VOLUME_TYPES

ROOTS = (
    "EnvVar",
    "Toleration",
    "Affinity",
    "ResourceRequirements",
    "TopologySpreadConstraint",
    "Volume",
    "VolumeMount",
    "LocalObjectReference",
    "LabelSelector",
    "NetworkPolicyPeer",
    "NetworkPolicyEgressRule",
)
ONLY = {"Volume": ("name", *RESTRICTED_VOLUME_TYPES), "ObjectMeta": ("annotations", "labels")}
"""Fields kept of these types: a Volume of the restricted types; an ephemeral volume's claim template
takes only labels and annotations (the API server refuses any other metadata there)."""
MAX_STRING = 1024
MAX_ITEMS = 64
MAX_INT = 2**31 - 1
LONGER_STRINGS = {("EnvVar", "value"): 32768}
"""An environment variable's value may be a whole config file; everything else is a name or a key."""
PATTERNS = {("EnvVar", "name"): "^[ -<>-~]+$"}
"""Printable ASCII without '=', as the API server requires of an environment variable's name."""
QUANTITIES = {
    ("ResourceRequirements", "limits"),
    ("ResourceRequirements", "requests"),
    ("ResourceFieldSelector", "divisor"),
    ("VolumeResourceRequirements", "limits"),
    ("VolumeResourceRequirements", "requests"),
    ("EmptyDirVolumeSource", "sizeLimit"),
}


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].removeprefix("CoreV1").removeprefix("V1")


def _node(node: dict[str, Any], owner: str, field: str) -> dict[str, Any]:
    branches = [b for b in node.get("anyOf", [node]) if b.get("type") != "null"]
    if sorted(b.get("type", "") for b in branches) == ["integer", "string"]:
        return {"port": True}  # IntOrString: in these types only a port (a number or a named port)
    (node,) = branches
    if "$ref" in node:
        return {"$ref": _name(node["$ref"])}
    kind = node["type"]
    if (owner, field) in QUANTITIES:
        return (
            {"type": "object", "additionalProperties": {"quantity": True}, "maxProperties": MAX_ITEMS}
            if kind == "object"
            else {"quantity": True}
        )
    if kind == "string":
        out: dict[str, Any] = {"type": "string", "maxLength": LONGER_STRINGS.get((owner, field), MAX_STRING)}
        if (owner, field) in PATTERNS:
            out["pattern"] = PATTERNS[(owner, field)]
        return out
    if kind == "integer":
        return {"type": "integer", "minimum": -MAX_INT - 1, "maximum": MAX_INT}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "array":
        return {"type": "array", "items": _node(node["items"], owner, field), "maxItems": MAX_ITEMS}
    if kind == "object":
        return {
            "type": "object",
            "additionalProperties": _node(node["additionalProperties"], owner, field),
            "maxProperties": MAX_ITEMS,
        }
    raise ValueError(f"{owner}.{field}: no rule for {node}")


def _reachable(defs: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """The definitions the roots use (those of the volume types left out are dropped)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(ref for ref in _refs(defs[name]) if ref not in seen)
    return sorted(seen)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [_name(node["$ref"])] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def generate() -> dict[str, Any]:
    from importlib.metadata import version

    from kubernetes import client
    from pydantic import TypeAdapter

    models = functools.reduce(operator.or_, (getattr(client, f"V1{root}") for root in ROOTS))
    raw = TypeAdapter(list[models]).json_schema(by_alias=True)
    kept = {
        _name(ref): {
            "properties": {
                field: node
                for field, node in schema["properties"].items()
                if _name(ref) not in ONLY or field in ONLY[_name(ref)]
            },
            "required": sorted(schema.get("required", [])),
        }
        for ref, schema in raw["$defs"].items()
    }
    defs = {
        owner: {
            "properties": {
                field: _node(node, owner, field) for field, node in sorted(kept[owner]["properties"].items())
            },
            "required": kept[owner]["required"],
        }
        for owner in _reachable(kept, ROOTS)
    }
    volume = defs["Volume"]["properties"]
    defs["VolumeSource"] = {"properties": {k: v for k, v in volume.items() if k != "name"}, "required": []}
    return {"generatedFrom": f"kubernetes=={version('kubernetes')}", "roots": list(ROOTS), "definitions": defs}


if __name__ == "__main__":
    json.dump(generate(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
