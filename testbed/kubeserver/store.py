"""
The objects and the semantics of every write: the one place where state changes.

HTTP requests and the direct methods of :class:`~testbed.kubeserver.KubeServer`
both end up here, so they bump the same resourceVersion and emit the same watch
events. The objects live in kmock's :class:`kmock.ObjectsArray` (inherited from
``KubernetesEmulator``), which keeps every version of every object.

All methods run in the server's event loop thread and never await, so every
write (with its cascade of garbage collection) is atomic for watchers and lists.
Stored dicts are never mutated after they are stored: a write stores a new dict,
which lets the event log share them without copying.
"""

import copy
import datetime
import random
import uuid
from collections.abc import Callable
from typing import Any

import kmock

from . import errors, selectors
from .resources import Registry, ResourceSpec, specs_from_crd
from .watch import ADDED, DELETED, MODIFIED, Change, EventLog

Obj = dict[str, Any]

# Fields of metadata that only the server sets; clients' values are ignored on updates.
SERVER_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "name",
    "generation",
    "resourceVersion",
)
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, objects: kmock.ObjectsArray, registry: Registry, log: EventLog) -> None:
        self._objects = objects
        self._registry = registry
        self._log = log
        self._rv = 0
        self._uids: set[str] = set()  # live objects, for the garbage collector's "is the owner gone?"
        self._namespaces = self._spec("", "v1", "namespaces")
        self.create(self._namespaces, None, {"metadata": {"name": "default"}})

    @property
    def resource_version(self) -> str:
        """The resourceVersion of the latest write: what lists answer and watches continue from."""
        return str(self._rv)

    def _spec(self, group: str, version: str, plural: str) -> ResourceSpec:
        spec = self._registry.get(group, version, plural)
        assert spec is not None
        return spec

    # Reading.

    def find(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj | None:
        key = (spec.storage_key, namespace if spec.namespaced else None, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return relabel(spec, self._objects[key].last.raw)

    def get(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj:
        obj = self.find(spec, namespace, name)
        if obj is None:
            raise errors.not_found(spec.qualified, name)
        return obj

    def select(self, spec: ResourceSpec, selector: selectors.Selector) -> list[Obj]:
        """The matching objects, sorted by namespace and name (the order of a real server)."""
        found = [
            ((namespace or "", name), item.last.raw)
            for (key, namespace, name), item in self._objects.items()
            if key == spec.storage_key and not item.deleted
        ]
        return [relabel(spec, obj) for _, obj in sorted(found, key=lambda pair: pair[0]) if selector.matches(obj)]

    def _live(self) -> list[tuple[ResourceSpec, Obj]]:
        """All objects of all resources, for the garbage collector and namespace cleanup."""
        result = []
        for (key, _, _), item in list(self._objects.items()):
            spec = self._registry.for_storage(key)
            if spec is not None and not item.deleted:
                result.append((spec, item.last.raw))
        return result

    # Writing.

    def create(self, spec: ResourceSpec, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a create request must be an object")
        if body.get("kind") not in (None, spec.kind) or body.get("apiVersion") not in (None, spec.api_version):
            raise errors.bad_request(
                f"{body.get('apiVersion')}/{body.get('kind')} cannot be created as {spec.qualified}"
            )
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if metadata.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if spec.namespaced:
            if namespace is None:
                raise errors.method_not_allowed(f"{spec.qualified} must be created in a namespace")
            if metadata.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._check_namespace(namespace)
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            suffix = "".join(random.choices(GENERATE_NAME_ALPHABET, k=5))
            metadata["name"] = metadata["generateName"] + suffix
        name = metadata.get("name")
        if not name:
            raise errors.invalid(spec.qualified, "", "metadata.name: Required value: name or generateName is required")
        if self.find(spec, namespace, name) is not None:
            raise errors.already_exists(spec.qualified, name)

        for field in SERVER_METADATA:
            if field not in ("name", "namespace"):
                metadata.pop(field, None)
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj["kind"], obj["apiVersion"] = spec.kind, spec.storage_api_version
        if spec.status:  # clients cannot set the status on creation, only via /status
            obj.pop("status", None)
        if spec.is_crd:
            obj["status"] = crd_status(obj, {})
        elif spec is self._namespaces:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
        created = self._put(spec, obj, ADDED, None)
        self._collect_if_ownerless(spec, obj)
        return created

    def update(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        subresource: str | None,
        change: Callable[[Obj], Any],
    ) -> Obj:
        """
        Replace or patch an object: ``change`` turns (a copy of) the current object into the desired one.

        ``subresource='status'`` takes only ``.status`` from the desired object; otherwise
        everything but ``.status`` (if the resource has the status subresource) and the
        server-owned metadata. A resourceVersion in the desired object is a precondition.
        """
        old = self.get(spec, namespace, name)
        desired = change(copy.deepcopy(old))
        if not isinstance(desired, dict):
            raise errors.bad_request("the updated object must be an object")
        desired_metadata = desired.get("metadata") or {}
        if desired_metadata.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise errors.conflict(
                spec.qualified,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if desired_metadata.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({desired_metadata.get('name')}) does not match the name on the URL ({name})"
            )

        if subresource == "status":
            new = copy.deepcopy(old)
            _set_or_drop(new, "status", desired.get("status"))
        else:
            new = self._main_write(spec, old, desired)
        if new == old:  # as a real server: no-op writes bump nothing and notify nobody
            return old

        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._drop(spec, new)
        updated = self._put(spec, new, MODIFIED, old)
        self._collect_if_ownerless(spec, new)
        return updated

    def _main_write(self, spec: ResourceSpec, old: Obj, desired: Obj) -> Obj:
        new = desired
        new["kind"], new["apiVersion"] = spec.kind, old["apiVersion"]
        metadata = new.setdefault("metadata", {})
        for field in SERVER_METADATA:
            _set_or_drop(metadata, field, old["metadata"].get(field))
        if spec.status:
            _set_or_drop(new, "status", old.get("status"))
        added_finalizers = set(metadata.get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
        if old["metadata"].get("deletionTimestamp") and added_finalizers:
            raise errors.invalid(
                spec.qualified,
                metadata["name"],
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
            )
        if _spec_part(spec, new) != _spec_part(spec, old):
            metadata["generation"] = old["metadata"].get("generation", 1) + 1
        if spec.is_crd:
            new["status"] = crd_status(new, old.get("status") or {})
        return new

    def delete(self, spec: ResourceSpec, namespace: str | None, name: str, options: Any) -> Obj:
        obj = self.get(spec, namespace, name)
        options = options if isinstance(options, dict) else {}
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) not in (None, obj["metadata"][field]):
                raise errors.conflict(
                    spec.qualified,
                    name,
                    f"Precondition failed: {field} in precondition: "
                    f"{preconditions[field]}, {field} in object meta: {obj['metadata'][field]}",
                )
        orphan = options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True
        if orphan:
            self._release_dependents(obj["metadata"]["uid"])
        return self._delete(spec, obj)

    def _delete(self, spec: ResourceSpec, obj: Obj) -> Obj:
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        if spec is self._namespaces:
            return self._terminate_namespace(obj)
        if obj["metadata"].get("finalizers"):
            new = copy.deepcopy(obj)
            new["metadata"].update(
                deletionTimestamp=now(),
                deletionGracePeriodSeconds=0,
                generation=obj["metadata"].get("generation", 1) + 1,
            )
            return self._put(spec, new, MODIFIED, obj)
        return self._drop(spec, obj)

    # Storage and its side effects.

    def _put(self, spec: ResourceSpec, obj: Obj, change_type: str, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        obj["apiVersion"] = spec.storage_api_version
        key = (spec.storage_key, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        self._uids.add(obj["metadata"]["uid"])
        self._log.append(Change(self._rv, spec.storage_key, change_type, obj, old))
        if spec.is_crd:
            self._registry.add_crd(obj)
        return relabel(spec, obj)

    def _drop(self, spec: ResourceSpec, obj: Obj) -> Obj:
        """Remove an object for good, then let the "controllers" react: CRD cleanup, GC, namespaces."""
        self._rv += 1
        final = {
            **obj,
            "apiVersion": spec.storage_api_version,
            "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)},
        }
        metadata = final["metadata"]
        self._objects[spec.storage_key, metadata.get("namespace"), metadata["name"]].delete()
        self._uids.discard(metadata["uid"])
        self._log.append(Change(self._rv, spec.storage_key, DELETED, final, obj))
        if spec.is_crd:
            self._drop_crd(final)
        self._collect_garbage(metadata["uid"])
        if metadata.get("namespace"):
            self._finish_namespace(metadata["namespace"])
        return relabel(spec, final)

    def _drop_crd(self, crd: Obj) -> None:
        """Remove the CRD's resources and all their objects (their finalizers are not waited for)."""
        for spec in [s for s in self._registry if s.qualified == crd["metadata"]["name"]]:
            for obj in self.select(spec, selectors.Selector()):
                self._drop(spec, obj)
        self._registry.remove_crd(crd["metadata"]["name"])

    def _collect_garbage(self, owner_uid: str) -> None:
        """
        Background cascading deletion, done at once: delete the dependents of a removed owner.

        As the real garbage collector: a dependent that still has another existing owner
        is not deleted, only its reference to the removed owner is dropped.
        """
        for spec, obj in self._live():
            references = obj["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in references):
                continue
            current = self.find(spec, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if current is None or current["metadata"]["uid"] != obj["metadata"]["uid"]:
                continue  # already removed by an earlier step of this cascade
            remaining = [ref for ref in references if ref.get("uid") != owner_uid]
            if any(ref.get("uid") in self._uids for ref in remaining):
                self._set_owners(spec, current, remaining)
            else:
                self._delete(spec, current)

    def _collect_if_ownerless(self, spec: ResourceSpec, obj: Obj) -> None:
        """
        The garbage collector on an object written with owners that are all gone already.

        A controller acting on a stale list (a ReplicaSet's pod made just after the ReplicaSet was
        collected) writes such dependents; the real collector finds that no owner exists and
        deletes them, so this does too (at once, background), or they would live on forever here.
        """
        references = obj["metadata"].get("ownerReferences") or []
        alive = any(ref.get("uid") in self._uids for ref in references)
        if references and not alive and not obj["metadata"].get("deletionTimestamp"):
            self._delete(spec, obj)

    def _release_dependents(self, owner_uid: str) -> None:
        """The Orphan propagation policy: dependents lose their reference to the owner."""
        for spec, obj in self._live():
            references = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in references):
                self._set_owners(spec, obj, [ref for ref in references if ref.get("uid") != owner_uid])

    def _set_owners(self, spec: ResourceSpec, obj: Obj, references: list[Obj]) -> None:
        new = copy.deepcopy(obj)
        _set_or_drop(new["metadata"], "ownerReferences", references or None)
        self._put(spec, new, MODIFIED, obj)

    def _check_namespace(self, namespace: str) -> None:
        ns = self.find(self._namespaces, None, namespace)
        if ns is None:
            raise errors.not_found("namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                "namespaces",
                namespace,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _terminate_namespace(self, ns: Obj) -> Obj:
        """The namespace controller: mark it Terminating, delete its content, remove it when empty."""
        new = copy.deepcopy(ns)
        new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
        new["status"] = {"phase": "Terminating"}
        terminating = self._put(self._namespaces, new, MODIFIED, ns)
        for spec, obj in self._live():
            if spec.namespaced and obj["metadata"].get("namespace") == ns["metadata"]["name"]:
                current = self.find(spec, obj["metadata"]["namespace"], obj["metadata"]["name"])
                if current is not None:
                    self._delete(spec, current)
        self._finish_namespace(ns["metadata"]["name"])
        return self.find(self._namespaces, None, ns["metadata"]["name"]) or terminating

    def _finish_namespace(self, namespace: str) -> None:
        ns = self.find(self._namespaces, None, namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if not any(obj["metadata"].get("namespace") == namespace for spec, obj in self._live() if spec.namespaced):
            self._drop(self._namespaces, ns)


def relabel(spec: ResourceSpec, obj: Obj) -> Obj:
    """The object as served under the requested version of its resource (CRDs have several)."""
    return obj if obj.get("apiVersion") == spec.api_version else {**obj, "apiVersion": spec.api_version}


def crd_status(crd: Obj, old_status: Obj) -> Obj:
    """What the apiextensions controllers would report: names accepted, established."""
    try:
        specs = specs_from_crd(crd)
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    except (KeyError, TypeError, IndexError) as e:
        raise errors.invalid(
            "customresourcedefinitions.apiextensions.k8s.io",
            crd.get("metadata", {}).get("name", ""),
            f"spec: missing or malformed field: {e}",
        ) from e
    if crd["metadata"]["name"] != f"{plural}.{group}":
        raise errors.invalid(
            "customresourcedefinitions.apiextensions.k8s.io",
            crd["metadata"]["name"],
            'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group',
        )
    names = crd["spec"]["names"]
    accepted = {key: names[key] for key in ("plural", "kind", "shortNames", "categories") if key in names}
    accepted.update(
        singular=specs[0].singular if specs else names["kind"].lower(),
        listKind=names.get("listKind") or f"{names['kind']}List",
    )
    conditions = old_status.get("conditions") or [
        {
            "type": "NamesAccepted",
            "status": "True",
            "reason": "NoConflicts",
            "message": "no conflicts found",
            "lastTransitionTime": now(),
        },
        {
            "type": "Established",
            "status": "True",
            "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
            "lastTransitionTime": now(),
        },
    ]
    stored = list(old_status.get("storedVersions") or [])
    storage = next((v["name"] for v in crd["spec"]["versions"] if v.get("storage")), None)
    if storage is not None and storage not in stored:
        stored.append(storage)
    return {"acceptedNames": accepted, "conditions": conditions, "storedVersions": stored}


def _spec_part(spec: ResourceSpec, obj: Obj) -> Obj:
    """What bumps the generation: everything but metadata (and status if it is a subresource)."""
    excluded = {"metadata", "kind", "apiVersion"} | ({"status"} if spec.status else set())
    return {key: value for key, value in obj.items() if key not in excluded}


def _set_or_drop(target: Obj, key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value
