"""Kubernetes' own pod field types (EnvVar, Toleration, Affinity, ResourceRequirements,
TopologySpreadConstraint, Volume, VolumeMount, LocalObjectReference) as pydantic models, built
from the generated `corev1.json`.

`scripts/corev1.py` generates that file from the Kubernetes client's models (see there why, and
what it adds); here each definition becomes an `ApiModel`, so `kubeflower validate`, the operator
and the CRD check these fields exactly as they check the job's own: unknown fields refused, every
string, list and number bounded, quantities in Kubernetes' grammar.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, create_model
from pydantic.alias_generators import to_snake

QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""Kubernetes' quantity grammar (resource.Quantity), without a sign: a resource is never negative."""
MAX_QUANTITY = 2**62
MAX_KEY = 317
"""The longest key of any map in the spec: a label key's (a 253-character prefix, '/', 63 more)."""
Quantity = Annotated[
    Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)],
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
            "maximum": MAX_QUANTITY,
            "maxLength": 64,
        }
    ),
]
"""A resource quantity (`500m`, `2Gi`, 4): as controller-gen writes it, the pattern applying to strings."""

PORT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
Port = Annotated[
    Annotated[int, Field(ge=1, le=65535)]
    | Annotated[str, Field(min_length=1, max_length=15, pattern=PORT_NAME_PATTERN)],
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": PORT_NAME_PATTERN,
            "minimum": 1,
            "maximum": 65535,
            "maxLength": 15,
        }
    ),
]
"""A port (a NetworkPolicy's): a number, or a container port's name (an IANA_SVC_NAME)."""

RESTRICTED_VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
"""The volume types the "restricted" Pod Security Standard allows: every pod of a job meets it, so
the user's volumes (and spec.output/spec.data sources) are of these types only (an NFS share: a
PersistentVolumeClaim bound to an NFS PersistentVolume). `scripts/corev1.py` keeps only these."""

DEFINITIONS = Path(__file__).with_name("corev1.json")


def _type(node: dict[str, Any], base: type) -> Any:
    if node.get("quantity"):
        return Quantity
    if node.get("port"):
        return Port
    if "$ref" in node:
        return model(node["$ref"], base)
    kind = node["type"]
    if kind == "string":
        return Annotated[str, Field(max_length=node["maxLength"], pattern=node.get("pattern"))]
    if kind == "integer":
        return Annotated[int, Field(ge=node["minimum"], le=node["maximum"])]
    if kind == "boolean":
        return bool
    if kind == "array":
        return Annotated[list[_type(node["items"], base)], Field(max_length=node["maxItems"])]  # type: ignore[misc]
    return Annotated[
        dict[Annotated[str, Field(max_length=MAX_KEY)], _type(node["additionalProperties"], base)],  # type: ignore[misc]
        Field(max_length=node["maxProperties"]),
    ]


@cache
def _definitions() -> dict[str, Any]:
    definitions: dict[str, Any] = json.loads(DEFINITIONS.read_text())["definitions"]
    return definitions


_MODELS: dict[str, type] = {}


def model(name: str, base: type) -> Any:
    """The model of one definition (and, through it, of those it refers to), subclassing `base`
    (the API's `ApiModel`: camelCase wire names, unknown fields refused)."""
    if name not in _MODELS:
        definition = _definitions()[name]
        fields: dict[str, Any] = {}
        for wire, node in definition["properties"].items():
            required = wire in definition["required"]
            python = to_snake(wire)
            python = python if re.match(r"^[a-z][a-z0-9_]*$", python) else f"field_{len(fields)}"
            fields[python] = (
                _type(node, base) if required else _type(node, base) | None,
                Field(... if required else None, alias=wire),
            )
        _MODELS[name] = create_model(name, __base__=base, __module__=__name__, **fields)
    return _MODELS[name]
