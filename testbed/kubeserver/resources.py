"""
What the server serves: built-in resources and those declared by CRDs.

A :class:`ResourceSpec` carries everything the other modules need about a resource:
discovery (kind, scope, short names, categories, subresources), the subresource
semantics (status, scale paths) and the printer columns of the Table rendering.
The registry is the single source of truth for discovery, so a CRD written through
the API becomes servable (and discoverable by kubectl and kopf) immediately.
"""

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import kmock

CRD_GROUP = "apiextensions.k8s.io"
CRD_PLURAL = "customresourcedefinitions"


@dataclasses.dataclass(frozen=True)
class PrinterColumn:
    """One of a CRD's ``additionalPrinterColumns``."""

    name: str
    type: str
    json_path: str
    format: str = ""
    description: str = ""
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class ScalePaths:
    """Where the ``autoscaling/v1`` Scale subresource maps to in the object."""

    spec_replicas: str
    status_replicas: str
    label_selector: str | None = None


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has the status subresource: main writes keep .status, /status writes only it
    scale: ScalePaths | None = None
    columns: tuple[PrinterColumn, ...] = ()  # empty: the default Name + Age table
    list_kind: str = ""
    # CRDs serve one set of objects under all their versions (conversion strategy "None"):
    # objects are stored under the storage version and re-labelled on reading.
    storage_version: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_api_version(self) -> str:
        """The apiVersion of the stored objects: that of the storage version for CRDs."""
        version = self.storage_version or self.version
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified(self) -> str:
        """The resource as the API server names it in messages: ``plural.group``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> kmock.resource:
        """The key of the objects in kmock's object store (shared by all versions of a CRD)."""
        return kmock.resource(self.group, self.storage_version or self.version, self.plural)

    @property
    def is_crd(self) -> bool:
        return self.group == CRD_GROUP and self.plural == CRD_PLURAL


_REPLICAS = ScalePaths(".spec.replicas", ".status.replicas", ".spec.selector")


def _builtin(
    api_version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short_names: tuple[str, ...] = (),
    status: bool = False,
    scale: ScalePaths | None = None,
    all_category: bool = False,
) -> ResourceSpec:
    group, _, version = api_version.rpartition("/")
    return ResourceSpec(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short_names,
        status=status,
        scale=scale,
        categories=("all",) if all_category else (),
        list_kind=f"{kind}List",
    )


BUILTINS: tuple[ResourceSpec, ...] = (
    _builtin("v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), status=True),
    _builtin("v1", "pods", "Pod", short_names=("po",), status=True, all_category=True),
    _builtin("v1", "services", "Service", short_names=("svc",), status=True, all_category=True),
    _builtin("v1", "events", "Event", short_names=("ev",)),
    _builtin("v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin("v1", "secrets", "Secret"),
    _builtin("v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",), status=True),
    _builtin("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _builtin(
        "apps/v1", "deployments", "Deployment", short_names=("deploy",), status=True, scale=_REPLICAS, all_category=True
    ),
    _builtin(
        "apps/v1", "statefulsets", "StatefulSet", short_names=("sts",), status=True, scale=_REPLICAS, all_category=True
    ),
    _builtin(
        "apps/v1", "replicasets", "ReplicaSet", short_names=("rs",), status=True, scale=_REPLICAS, all_category=True
    ),
    _builtin("batch/v1", "jobs", "Job", status=True, all_category=True),
    _builtin("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _builtin(
        f"{CRD_GROUP}/v1",
        CRD_PLURAL,
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        status=True,
    ),
    _builtin("events.k8s.io/v1", "events", "Event", short_names=("ev",)),
    _builtin("coordination.k8s.io/v1", "leases", "Lease"),
)


def specs_from_crd(crd: Mapping[str, Any]) -> list[ResourceSpec]:
    """The served versions of a CRD as resource specs; KeyError/TypeError if malformed."""
    spec = crd["spec"]
    names = spec["names"]
    versions = spec["versions"]
    storage = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"])
    result: list[ResourceSpec] = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        result.append(
            ResourceSpec(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subresources,
                scale=None
                if scale is None
                else ScalePaths(
                    spec_replicas=scale["specReplicasPath"],
                    status_replicas=scale["statusReplicasPath"],
                    label_selector=scale.get("labelSelectorPath"),
                ),
                columns=tuple(
                    PrinterColumn(
                        name=column["name"],
                        type=column.get("type", "string"),
                        json_path=column["jsonPath"],
                        format=column.get("format", ""),
                        description=column.get("description", ""),
                        priority=column.get("priority", 0),
                    )
                    for column in version.get("additionalPrinterColumns") or ()
                ),
                list_kind=names.get("listKind") or f"{names['kind']}List",
                storage_version=storage,
            )
        )
    return result


class Registry:
    """The resources currently served: the built-ins plus those of the stored CRDs."""

    def __init__(self, builtins: Iterable[ResourceSpec] = BUILTINS) -> None:
        self._specs: dict[tuple[str, str, str], ResourceSpec] = {
            (spec.group, spec.version, spec.plural): spec for spec in builtins
        }
        self._by_crd: dict[str, list[tuple[str, str, str]]] = {}

    def get(self, group: str, version: str, plural: str) -> ResourceSpec | None:
        return self._specs.get((group, version, plural))

    def find_kind(self, api_version: str, kind: str) -> ResourceSpec | None:
        return next((s for s in self._specs.values() if s.api_version == api_version and s.kind == kind), None)

    def for_storage(self, key: kmock.resource) -> ResourceSpec | None:
        """A spec under which objects stored with this key are served, preferably the storage version."""
        preferred = self._specs.get((key.group or "", key.version or "", key.plural or ""))
        return preferred or next((s for s in self._specs.values() if s.storage_key == key), None)

    def __iter__(self) -> Iterator[ResourceSpec]:
        return iter(list(self._specs.values()))

    def add_crd(self, crd: Mapping[str, Any]) -> list[ResourceSpec]:
        """Serve (or re-serve, on updates) the versions of a CRD."""
        specs = specs_from_crd(crd)
        self.remove_crd(crd["metadata"]["name"])
        self._by_crd[crd["metadata"]["name"]] = [(s.group, s.version, s.plural) for s in specs]
        self._specs.update({(s.group, s.version, s.plural): s for s in specs})
        return specs

    def remove_crd(self, name: str) -> None:
        for key in self._by_crd.pop(name, []):
            self._specs.pop(key, None)
