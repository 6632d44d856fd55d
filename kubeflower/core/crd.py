"""The CustomResourceDefinition, generated from the pydantic model.

Pydantic's JSON schema is turned into a Kubernetes structural schema: references inlined, titles
dropped, `Optional[X]` collapsed to `X` (absence is optionality in Kubernetes), and
`additionalProperties: false` removed (structural schemas forbid it beside `properties`; the API
server prunes unknown fields instead, and `kubeflower validate` reports them).
"""

from __future__ import annotations

from typing import Any

from kubeflower.core import api

_DROP_KEYS = {"title", "additionalProperties"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if node.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in node.items() if k not in _DROP_KEYS}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                del rest["default"]
            return _structural({**branches[0], **rest}, defs)
        raise ValueError(f"non-structural union in the API model: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "propertyNames":
            # Not in a CRD's schema language: the keys' length is a CEL rule there.
            limit = value["maxLength"]
            rule = {"rule": f"self.all(k, k.size() <= {limit})", "message": f"keys must be at most {limit} characters"}
            out.setdefault("x-kubernetes-validations", []).append(rule)
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "default" and value is None:
            continue
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = _structural(value, defs)
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's only version."""
    raw = api.FederatedTrainingJob.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    schema.pop("description", None)
    props = schema["properties"]
    # metadata is validated by the API server itself; a CRD may only constrain name.
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    schema["required"] = ["spec"]
    # Children are created from defaults, so the spec's nested objects must exist after defaulting.
    for name in ("clients", "server", "strategy", "runPolicy", "service"):
        props["spec"]["properties"][name]["default"] = {}
    props["spec"]["properties"]["task"]["properties"]["partitioning"]["default"] = {}
    return schema


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Round", "type": "string", "jsonPath": ".status.round"},
    {"name": "Clients", "type": "string", "jsonPath": ".status.clients"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.metrics.accuracy"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "kubeflower"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.clients.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
