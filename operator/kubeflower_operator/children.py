"""Writes to a job's children through the Kubernetes client: create, replace, patch, delete, by kind.

Every write is idempotent from the reconcile's point of view: creating what already exists (the
watch had not caught up yet) and deleting what is already gone are not errors. What already exists
is ours only if its controller owner reference is the job's: an object of the same name owned by
something else is a conflict (`NotOurs`), never adopted or overwritten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeflower.core import api

Manifest = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger(__name__)

# kind -> (API class, method suffix)
_KINDS: dict[str, tuple[Callable[[client.ApiClient], Any], str]] = {
    "Deployment": (client.AppsV1Api, "deployment"),
    "StatefulSet": (client.AppsV1Api, "stateful_set"),
    "Service": (client.CoreV1Api, "service"),
    "ConfigMap": (client.CoreV1Api, "config_map"),
    "NetworkPolicy": (client.NetworkingV1Api, "network_policy"),
}


class NotOurs(Exception):
    """A child's name is taken by an object that another owner controls."""

    def __init__(self, kind: str, name: str, owner: str) -> None:
        super().__init__(f"{kind} {name} already exists and belongs to {owner}; rename the job or remove that object")
        self.kind, self.name = kind, name


def _controller(obj: Manifest) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
    return None


class Children:
    """The operator's hands on child objects, sharing one API client."""

    def __init__(
        self,
        api_client: client.ApiClient,
        on_error: Callable[[str, str, int | None], None] = lambda *_: None,
        before_write: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = api_client
        self._on_error = on_error
        """Told (verb, kind, HTTP code) of every error answer, expected ones included (metrics)."""
        self._before_write = before_write
        """Called before every write: the leader's fence (`leadership.Leadership.check`)."""

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        api_class, suffix = _KINDS[kind]
        method: Callable[..., Any] = getattr(api_class(self._client), f"{verb}_namespaced_{suffix}")

        def call(*args: Any, **kwargs: Any) -> Any:
            self._before_write()
            try:
                return method(*args, **kwargs)
            except ApiException as exc:
                self._on_error(verb, kind, exc.status)
                raise

        return call

    def create(self, namespace: str, manifest: Manifest) -> None:
        """Create the child; one that exists already is fine only if the job controls it."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            self._method("create", kind)(namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = self._read(namespace, kind, name)
            owner = _controller(existing)
            ours = _controller(manifest)
            if owner != ours:
                raise NotOurs(kind, name, owner or "no controller") from None
            log.debug("%s %s already exists", kind, name)

    def _read(self, namespace: str, kind: str, name: str) -> Manifest:
        api_class, suffix = _KINDS[kind]
        method = getattr(api_class(self._client), f"read_namespaced_{suffix}")
        try:
            found: Manifest = json.loads(method(name, namespace, _preload_content=False).data)
            return found
        except ApiException as exc:
            self._on_error("read", kind, exc.status)
            raise

    def replace(self, namespace: str, manifest: Manifest) -> None:
        """Replace the child with the manifest (which carries the resourceVersion it was observed
        at: a 409 if it changed since, and the next reconcile plans again)."""
        self._method("replace", manifest["kind"])(manifest["metadata"]["name"], namespace, manifest)

    def patch(self, namespace: str, manifest: Manifest) -> None:
        self._method("patch", manifest["kind"])(
            manifest["metadata"]["name"], namespace, manifest, _content_type=MERGE_PATCH
        )

    def delete(self, namespace: str, kind: str, name: str) -> None:
        try:
            self._method("delete", kind)(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def claim_access_modes(self, namespace: str, name: str) -> list[str] | None:
        """A PersistentVolumeClaim's access modes (the job's data volume: can clients on several
        nodes share it?); None when it does not exist (yet: its pods then wait for it)."""
        try:
            claim = client.CoreV1Api(self._client).read_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as exc:
            self._on_error("get", "PersistentVolumeClaim", exc.status)
            if exc.status != 404:
                raise
            return None
        return list((claim.spec.access_modes if claim.spec else None) or [])

    def delete_job(self, namespace: str, name: str) -> None:
        self._before_write()
        try:
            client.CustomObjectsApi(self._client).delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            self._on_error("delete", api.KIND, exc.status)
            if exc.status != 404:
                raise
