"""
The JSONPath subset of printer columns, scale paths and field selectors.

CRDs restrict ``additionalPrinterColumns`` and scale paths to "simple" JSONPaths;
in practice these are dotted fields with list indexes and equality filters, e.g.
``.status.phase``, ``.spec.containers[0].image``,
``.status.conditions[?(@.type=="Ready")].status``. That is all that is supported.
"""

import re
from collections.abc import Sequence
from typing import Any

_TOKEN = re.compile(
    r"""
    \.(?P<field>[^.\[]+)                                       # .field
  | \[(?P<index>-?\d+)\]                                       # [0]
  | \[['"](?P<quoted>[^'"]+)['"]\]                             # ['field']
  | \[\?\(@\.(?P<key>[\w.-]+)\s*==\s*['"](?P<value>[^'"]*)['"]\)\]  # [?(@.type=="Ready")]
""",
    re.VERBOSE,
)

Step = str | int | tuple[str, str]  # a field, a list index, or a (key, value) filter


def parse(path: str) -> list[Step]:
    """Parse a JSONPath, with or without kubectl's ``{...}`` braces; ValueError if unsupported."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if not path.startswith((".", "[")):
        path = "." + path
    steps: list[Step] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath: {path!r}")
        if match["field"] is not None or match["quoted"] is not None:
            steps.append(match["field"] or match["quoted"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append((match["key"], match["value"]))
        position = match.end()
    return steps


def find(obj: Any, path: str | Sequence[Step]) -> tuple[bool, Any]:
    """Evaluate a path: ``(True, value)`` if found, ``(False, None)`` if not."""
    value = obj
    for step in parse(path) if isinstance(path, str) else path:
        if (isinstance(step, str) and isinstance(value, dict) and step in value) or (
            isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value)
        ):
            value = value[step]
        elif isinstance(step, tuple) and isinstance(value, list):
            key, expected = step
            matching = [item for item in value if find(item, "." + key) == (True, expected)]
            if not matching:
                return False, None
            value = matching[0]
        else:
            return False, None
    return True, value


def assign(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted-field path (as scale's ``specReplicasPath``), creating the dicts on the way."""
    *parents, last = parse(path)
    target = obj
    for step in parents:
        if not isinstance(step, str):
            raise ValueError(f"only dotted fields can be assigned: {path!r}")
        target = target.setdefault(step, {})
    if not isinstance(last, str):
        raise ValueError(f"only dotted fields can be assigned: {path!r}")
    target[last] = value


def as_text(value: Any) -> str:
    """A scalar as the API server compares it in selectors: ``true``, ``3``, ``""`` if absent."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
