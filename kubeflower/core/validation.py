"""Turning a job document into a model, or into errors a user can act on.

Shared by `kubeflower validate`, `kubeflower render`, local mode and the operator, so every entry
point reports the same problem the same way: the field's path, what is wrong, and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubeflower.core.api import API_VERSION, IMAGE_PATTERN, KIND, FederatedTrainingJob

# What to do, by pydantic error type; the message already says what is wrong.
_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling against `kubeflower crd`",
    "enum": "use one of the values listed",
    "literal_error": "use the value listed",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use a string",
    "model_type": "use a mapping of fields",
    "dict_type": "use a mapping",
    "list_type": "use a list",
    "greater_than": "raise it",
    "greater_than_equal": "raise it",
    "less_than": "lower it",
    "less_than_equal": "lower it",
    "string_too_short": "fill it in",
    "string_too_long": "shorten it",
    "too_long": "remove entries",
    "string_pattern_mismatch": "check its format",
    "finite_number": "use a finite number",
}


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class JobInvalid(Exception):
    """A job document that cannot run; `errors` name each field and its fix."""

    def __init__(self, name: str, errors: list[FieldError]) -> None:
        self.name = name
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_MEMBERS = {"str", "int", "float", "bool", "constrained-str", "constrained-int"}
_QUANTITY_MAPS = {"limits", "requests", "divisor"}
_PATTERNS = {
    IMAGE_PATTERN: "is not an image reference; use registry/name:tag or name@sha256:digest",
}
"""What a pattern means, in words (the regular expression itself helps nobody)."""
QUANTITY_MESSAGE = "must be a Kubernetes quantity: a whole number >= 0, or a string such as 500m, 1.5, 2Gi"


def field_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    scalar_unions: set[str] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        if loc and loc[-1] == "[key]":
            # A map's key failed (too long): the map is the field, the key quoted, shortened.
            errors.append(FieldError(_path(loc[:-2]), f"key {str(loc[-2])[:40]!r}...: {err['msg']}; shorten it"))
            continue
        if err["type"] == "cel_rule":
            rule_path = tuple(p for p in err["ctx"]["field_path"].lstrip(".").split(".") if p)
            errors.append(FieldError(_path(loc + rule_path), err["msg"]))
            continue
        if loc and loc[-1] in _UNION_MEMBERS:
            # A run config value or a quantity failed every member of its union: one error, not one per type.
            path = _path(loc[:-1])
            if path not in scalar_unions:
                scalar_unions.add(path)
                quantity = bool(_QUANTITY_MAPS & {str(p) for p in loc})
                what = QUANTITY_MESSAGE if quantity else "must be a string, number or boolean"
                errors.append(FieldError(path, f"{what} (got {err['input']!r})"[:300]))
            continue
        if err["type"] == "string_pattern_mismatch" and _PATTERNS.get(err["ctx"]["pattern"]):
            errors.append(FieldError(_path(loc), f"{_PATTERNS[err['ctx']['pattern']]} (got {err['input']!r})"[:300]))
            continue
        message = err["msg"]
        fix = _FIXES.get(err["type"])
        if fix:
            message = f"{message}; {fix}"
        if err["type"] not in {"missing"} and "input" in err and not isinstance(err["input"], dict | list):
            message = f"{message} (got {err['input']!r})"[:300]
        errors.append(FieldError(_path(loc), message))
    return errors


def parse_job(document: Any) -> FederatedTrainingJob:
    """The job, or JobInvalid listing every problem with its field path."""
    if not isinstance(document, dict):
        raise JobInvalid("?", [FieldError("(document)", "a job must be a YAML mapping")])
    name = str((document.get("metadata") or {}).get("name", "?"))
    head = []
    if document.get("apiVersion") != API_VERSION:
        head.append(FieldError("apiVersion", f"must be {API_VERSION} (got {document.get('apiVersion')!r})"))
    if document.get("kind") != KIND:
        head.append(FieldError("kind", f"must be {KIND} (got {document.get('kind')!r})"))
    if head:
        raise JobInvalid(name, head)
    body = {k: v for k, v in document.items() if k in {"apiVersion", "kind", "metadata", "spec"}}
    try:
        # Strict, as JSON: the types the API server takes and no others (no "3" for 3, no 2.0 for
        # 2, no true for 1), so `kubeflower validate`, the operator and the CRD agree. YAML's own
        # scalars (a date) become strings, as kubectl sends them.
        return FederatedTrainingJob.model_validate_json(json.dumps(body, default=str), strict=True)
    except ValidationError as exc:
        raise JobInvalid(name, field_errors(exc)) from None


def load_documents(path: Path) -> list[Any]:
    """Every YAML document in the file (empty documents skipped)."""
    text = path.read_text() if str(path) != "-" else __import__("sys").stdin.read()
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise JobInvalid("?", [FieldError(str(path), f"not valid YAML: {exc}")]) from None


def load_job(path: Path) -> FederatedTrainingJob:
    """The one job in a file (local mode runs one job)."""
    documents = load_documents(path)
    if len(documents) != 1:
        raise JobInvalid("?", [FieldError(str(path), f"expected one job, found {len(documents)} documents")])
    return parse_job(documents[0])
