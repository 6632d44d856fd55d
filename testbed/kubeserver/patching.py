"""
The three PATCH flavours of the Kubernetes API.

* JSON merge patch (RFC 7386): what kopf and ``kubectl apply`` of custom resources send.
* JSON patch (RFC 6902), via the ``jsonpatch`` library: kopf guards its finalizer and
  annotation updates with a ``test`` op on ``/metadata/resourceVersion``, and expects
  a failed test to answer 422 (then it retries on a fresher object).
* Strategic merge patch: what ``kubectl apply``/``edit``/``patch`` send for built-in
  kinds. A real server reads the merge strategy of every list from the Go types; here
  it comes from a table of the common merge keys (containers and volumes by ``name``,
  ports by ``containerPort`` or ``port``, conditions by ``type``, ...), the
  ``finalizers`` list merges as a set, and every other list is replaced whole. The
  directives ``$patch`` (replace/delete/merge), ``$retainKeys``,
  ``$deleteFromPrimitiveList/<list>`` and ``$setElementOrder/<list>`` are honoured.
"""

import copy
from typing import Any

import jsonpatch
import jsonpointer

from . import errors

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH)

# Merge keys of the lists with patchStrategy=merge in the built-in types, by field name.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
}
SET_LISTS = frozenset({"finalizers"})  # primitive lists with patchStrategy=merge

_DELETE = object()  # a map-level ``$patch: delete``: remove the map from its parent


def apply(content_type: str, target: dict[str, Any], patch: Any, *, what: str, name: str) -> dict[str, Any]:
    """Apply a patch of the given content type to a copy of ``target``."""
    if content_type == MERGE_PATCH:
        result = merge_patch(target, patch)
    elif content_type == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(target, patch)
    elif content_type == JSON_PATCH:
        result = json_patch(target, patch, what=what, name=name)
    else:
        raise errors.unsupported_media_type(content_type)
    if not isinstance(result, dict):
        raise errors.bad_request("the patch does not produce an object")
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any, *, what: str, name: str) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise errors.invalid(what, name, f"the test operation of the JSON patch failed: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise errors.invalid(what, name, f"the JSON patch cannot be applied: {e}") from e


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    result = _merge_map(target, patch) if isinstance(patch, dict) else copy.deepcopy(patch)
    return {} if result is _DELETE else result


def _merge_map(target: Any, patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    plain = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return copy.deepcopy(plain)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in plain.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _reorder(field, result[field], value)
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    current = copy.deepcopy(target) if isinstance(target, list) else []
    if field in SET_LISTS:
        return current + [item for item in patch if item not in current]
    if {"$patch": "replace"} in patch:
        return [_strip(item) for item in patch if item != {"$patch": "replace"}]
    key = _merge_key(field, current + patch)
    if key is None or not all(isinstance(item, dict) for item in current + patch):
        return [_strip(item) for item in patch]
    for item in patch:
        position = next((i for i, old in enumerate(current) if old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del current[position]
        elif position is None:
            current.append(_strip(item))
        else:
            current[position] = _merge_map(current[position], item)
    return current


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Sort the items as ``$setElementOrder`` lists them; the unlisted ones go last."""
    key = _merge_key(field, items)

    def identity(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    wanted = [identity(item) for item in order]
    return sorted(items, key=lambda item: wanted.index(identity(item)) if identity(item) in wanted else len(wanted))


def _strip(item: Any) -> Any:
    """Drop the directives from a patch item that is inserted as is."""
    if isinstance(item, dict):
        return {k: _strip(v) for k, v in item.items() if not k.startswith("$")}
    return copy.deepcopy(item)
