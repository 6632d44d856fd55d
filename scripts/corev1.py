"""Generate kubeflower/core/corev1.json: the Kubernetes core schemas the job's pod fields carry.

`env`, `tolerations`, `affinity`, `resources` and `topologySpreadConstraints` are Kubernetes' own
types (EnvVar, Toleration, Affinity, ResourceRequirements, TopologySpreadConstraint). Their schemas
are generated here from the Kubernetes Python client's models (pydantic models, themselves
generated from the API server's OpenAPI document of the client's version, `kubernetes` in
pyproject.toml), not written by hand, and committed, so the core (which does not depend on the
client) builds its models and the CRD from them (`kubeflower.core.corev1`). `make crd` runs this;
a test fails when the committed file differs from what the installed client gives.

What the client's schemas leave out is added here, in one place: a maximum on every string, list,
map and integer (bounded input, and what keeps CEL's cost estimate within the API server's budget),
quantities checked against Kubernetes' quantity grammar, a port (an IntOrString: 1-65535 or a
port's name), and an environment variable's name without `=`. Descriptions are dropped: the CRD
must stay small enough for client-side apply.
"""

from __future__ import annotations

import functools
import json
import operator
import sys
from typing import Any

ROOTS = (
    "EnvVar",
    "Toleration",
    "Affinity",
    "ResourceRequirements",
    "TopologySpreadConstraint",
    "LabelSelector",
    "NetworkPolicyPeer",
    "NetworkPolicyEgressRule",
)
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


def generate() -> dict[str, Any]:
    from importlib.metadata import version

    from kubernetes import client
    from pydantic import TypeAdapter

    models = functools.reduce(operator.or_, (getattr(client, f"V1{root}") for root in ROOTS))
    raw = TypeAdapter(list[models]).json_schema(by_alias=True)
    defs = {}
    for ref, schema in sorted(raw["$defs"].items()):
        owner = _name(ref)
        defs[owner] = {
            "properties": {field: _node(node, owner, field) for field, node in sorted(schema["properties"].items())},
            "required": sorted(schema.get("required", [])),
        }
    return {"generatedFrom": f"kubernetes=={version('kubernetes')}", "roots": list(ROOTS), "definitions": defs}


if __name__ == "__main__":
    json.dump(generate(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
