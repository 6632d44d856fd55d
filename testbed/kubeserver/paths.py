"""
The URL grammar of the Kubernetes API.

kmock 0.8 parses ``/api/v1/namespaces`` as a namespace with no resource (and fails
with a 500 on the bare list), so the server parses paths itself:

* ``/api/v1/{plural}[/{name}[/{subresource}]]`` and ``/apis/{group}/{version}/...``
* ``.../namespaces/{namespace}/{plural}[/{name}[/{subresource}]]``
* ``/api/v1/namespaces[/{name}[/status|finalize]]``: the namespaces themselves.
"""

import dataclasses

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclasses.dataclass(frozen=True)
class ApiPath:
    group: str
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> ApiPath | None:
    """Parse an API path; None for non-API paths (``/``, ``/api``, ``/apis``, ``/version``...)."""
    parts = [part for part in path.split("/") if part]
    version: str | None
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    else:
        return None

    namespace: str | None = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3 and rest[2] not in NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    plural, name, subresource = [*rest, None, None, None][:3]
    return ApiPath(group, version, plural, namespace, name, subresource)
