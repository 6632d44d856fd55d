"""
API discovery documents, built from the registry on every request.

Only the legacy (unaggregated) discovery is served: kubectl 1.32 asks for the
aggregated ``apidiscovery.k8s.io/v2`` format first, but accepts plain ``application/json``
answers and then walks ``/api/v1`` and ``/apis/{group}/{version}`` itself. kmock's own
documents name the core group version ``"/v1"`` (kubectl then maps no core resource) and
repeat the short names on the subresources, which kubectl then reports as ambiguous.
"""

from collections.abc import Iterable
from typing import Any

from .resources import ResourceSpec

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]
KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubeserver",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    """``/api``: the core group has only v1."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _versions(specs: Iterable[ResourceSpec], group: str) -> list[str]:
    """The versions of a group, the preferred (storage, or the first declared) one first."""
    versions: list[str] = []
    for spec in specs:
        if spec.group == group and spec.version not in versions:
            if spec.version == spec.storage_version:
                versions.insert(0, spec.version)
            else:
                versions.append(spec.version)
    return versions


def _group(specs: list[ResourceSpec], group: str) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in _versions(specs, group)]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group(specs: Iterable[ResourceSpec], group: str) -> dict[str, Any] | None:
    """``/apis/{group}``, or None if no such group is served."""
    specs = list(specs)
    if not group or not any(spec.group == group for spec in specs):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(specs, group)}


def api_group_list(specs: Iterable[ResourceSpec]) -> dict[str, Any]:
    """``/apis``: all the non-core groups."""
    specs = list(specs)
    groups = dict.fromkeys(spec.group for spec in specs if spec.group)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(specs, group) for group in groups]}


def api_resource_list(specs: Iterable[ResourceSpec], group: str, version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/{group}/{version}``, or None if no such group version is served."""
    served = [spec for spec in specs if spec.group == group and spec.version == version]
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for spec in served:
        resources.append(
            {
                "name": spec.plural,
                "singularName": spec.singular,
                "namespaced": spec.namespaced,
                "kind": spec.kind,
                "verbs": VERBS,
                **({"shortNames": list(spec.short_names)} if spec.short_names else {}),
                **({"categories": list(spec.categories)} if spec.categories else {}),
            }
        )
        if spec.status:
            resources.append(
                {
                    "name": f"{spec.plural}/status",
                    "singularName": "",
                    "namespaced": spec.namespaced,
                    "kind": spec.kind,
                    "verbs": SUBRESOURCE_VERBS,
                }
            )
        if spec.scale is not None:
            resources.append(
                {
                    "name": f"{spec.plural}/scale",
                    "singularName": "",
                    "namespaced": spec.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": SUBRESOURCE_VERBS,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
