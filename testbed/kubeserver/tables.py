"""
Server-side Table rendering (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kubectl renders nothing itself for ``kubectl get``: it asks for a Table and prints
its cells. As on a real server, custom resources get a Name column followed by
their CRD's ``additionalPrinterColumns`` (Name and Age if there are none), and
``date`` columns are rendered as a human duration ("5s", "3m12s", "2d") because
the server, not kubectl, formats them. Built-in kinds get the default Name and Age
columns, not their real, richer ones (READY, STATUS, RESTARTS, ...).
"""

import datetime
import json
from typing import Any

from . import jsonpath
from .resources import PrinterColumn, ResourceSpec

NAME = PrinterColumn(
    name="Name",
    type="string",
    format="name",
    json_path=".metadata.name",
    description="Name must be unique within a namespace.",
)
AGE = PrinterColumn(
    name="Age",
    type="date",
    json_path=".metadata.creationTimestamp",
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def table_version(accept: str) -> str | None:
    """The Table apiVersion the client accepts (``meta.k8s.io/v1``), or None for plain JSON."""
    for media_type in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in media_type.split(";")[1:])
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return f"meta.k8s.io/{params.get('v', 'v1')}"
    return None


def columns(spec: ResourceSpec) -> list[PrinterColumn]:
    return [NAME, *(spec.columns or [AGE])]


def render(
    spec: ResourceSpec,
    objects: list[dict[str, Any]],
    *,
    api_version: str,
    include_object: str,
    resource_version: str = "",
    with_columns: bool = True,
    continue_token: str = "",
) -> dict[str, Any]:
    """
    A Table of the objects.

    ``with_columns=False`` is for the watch events after the first one: a real server
    sends the column definitions once per watch, and kubectl reuses them.
    """
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": [_definition(column) for column in columns(spec)] if with_columns else [],
        "rows": [_row(spec, obj, include_object, api_version) for obj in objects],
    }


def _definition(column: PrinterColumn) -> dict[str, Any]:
    return {
        "name": column.name,
        "type": column.type,
        "format": column.format,
        "description": column.description,
        "priority": column.priority,
    }


def _row(spec: ResourceSpec, obj: dict[str, Any], include_object: str, api_version: str) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": [_cell(column, obj) for column in columns(spec)]}
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":  # the default: PartialObjectMetadata
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": api_version,
            "metadata": obj.get("metadata", {}),
        }
    return row


def _cell(column: PrinterColumn, obj: dict[str, Any]) -> Any:
    found, value = jsonpath.find(obj, column.json_path)
    if not found or value is None:
        return None
    if column.type == "date":
        return _age(value)
    if column.type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column.type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if column.type == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return jsonpath.as_text(value)


def _age(timestamp: Any) -> str | None:
    try:
        then = datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return human_duration(datetime.datetime.now(datetime.UTC) - then)


def human_duration(delta: datetime.timedelta) -> str:
    """A port of k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl shows AGE."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"
