"""Strict schema checks of manifests against Kubernetes' own types: the kubernetes client's models
(pydantic, generated from the API server's OpenAPI, unknown fields forbidden). An unknown field, a
wrong type or a missing required field is an error, as the API server's strict field validation
reports it."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from pydantic import ValidationError


def strict_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way `manifest` is not a valid object of its kind (`kind`: Deployment, StatefulSet, ...)."""
    model = getattr(client, f"V1{manifest['kind']}")
    try:
        model.model_validate(manifest)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
            # A quantity is int-or-string on the wire; the model types it as a string.
            if not (error["type"] == "string_type" and isinstance(error["input"], int) and _quantity(error["loc"]))
        ]
    return []


def _quantity(location: tuple[Any, ...]) -> bool:
    return len(location) >= 2 and location[-2] in ("limits", "requests")
