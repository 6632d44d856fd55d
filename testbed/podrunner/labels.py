"""Label selectors: a Service's plain map, and a workload's `matchLabels`/`matchExpressions`."""

from __future__ import annotations

from typing import Any


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether `labels` satisfy the selector; an empty or missing selector matches nothing."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())  # a Service's selector
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
