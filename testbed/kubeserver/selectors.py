"""
Label and field selectors of list and watch requests.

Label selectors support the full string syntax: ``k=v``, ``k==v``, ``k!=v``,
``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``. Field selectors support
``=``, ``==`` and ``!=`` on any dotted field (a real server allows only a fixed set
per resource, e.g. ``metadata.name``, ``metadata.namespace``, and ``involvedObject.*``
for events, which kubectl describe uses); a missing field compares as ``""``.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import errors, jsonpath

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)$")
_EXISTS = re.compile(rf"^(?P<negation>!?)\s*(?P<key>{_KEY})$")
_FIELD = re.compile(r"^(?P<key>[A-Za-z][\w.]*)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")

Requirement = Callable[[Mapping[str, str]], bool]


def _split(selector: str) -> list[str]:
    """Split on the commas that are not inside ``in (...)`` value sets."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _label_requirement(text: str) -> Requirement:
    if match := _SET.match(text):
        key, values = match["key"], {v.strip() for v in match["values"].split(",") if v.strip()}
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY.match(text):
        key, value = match["key"], match["value"]
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        key, negated = match["key"], bool(match["negation"])
        return lambda labels: (key in labels) != negated
    raise errors.bad_request(f"unable to parse requirement: {text!r}")


def _field_requirement(text: str) -> Callable[[dict[str, Any]], bool]:
    match = _FIELD.match(text)
    if match is None:
        raise errors.bad_request(f"invalid field selector: {text!r}")
    path, value, negated = "." + match["key"], match["value"], match["op"] == "!="
    return lambda obj: (jsonpath.as_text(jsonpath.find(obj, path)[1]) == value) != negated


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which objects a list or watch request is about: namespace, name, labels, fields."""

    namespace: str | None = None
    name: str | None = None
    label_requirements: tuple[Requirement, ...] = ()
    field_requirements: tuple[Callable[[dict[str, Any]], bool], ...] = ()

    @classmethod
    def parse(
        cls, *, namespace: str | None = None, name: str | None = None, labels: str = "", fields: str = ""
    ) -> "Selector":
        return cls(
            namespace=namespace,
            name=name,
            label_requirements=tuple(_label_requirement(part) for part in _split(labels)),
            field_requirements=tuple(_field_requirement(part) for part in _split(fields)),
        )

    def matches(self, obj: dict[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        if self.namespace is not None and metadata.get("namespace") != self.namespace:
            return False
        if self.name is not None and metadata.get("name") != self.name:
            return False
        labels = metadata.get("labels") or {}
        return all(requirement(labels) for requirement in self.label_requirements) and all(
            requirement(obj) for requirement in self.field_requirements
        )


def format_label_selector(selector: Mapping[str, Any]) -> str:
    """A ``LabelSelector`` struct as a selector string (for the Scale of Deployments)."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        parts.append(
            {
                "In": f"{key} in ({','.join(values)})",
                "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(parts)
