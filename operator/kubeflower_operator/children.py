"""Writes to a job's children through the Kubernetes client: create, replace, patch, delete, by kind.

Plain JSON requests (`rest`), not the client's typed API classes: the manifests are dicts already.

Every write is idempotent from the reconcile's point of view: creating what already exists (the
watch had not caught up yet) and deleting what is already gone are not errors. What already exists
is ours only if its controller owner reference is the job's: an object of the same name owned by
something else is a conflict (`NotOurs`), never adopted or overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from kubeflower.core import api
from kubeflower_operator import rest
from kubeflower_operator.observed import CertificateState

Manifest = dict[str, Any]
log = logging.getLogger(__name__)

# kind -> (API group, version, plural)
_KINDS: dict[str, tuple[str, str, str]] = {
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "Service": ("", "v1", "services"),
    "ConfigMap": ("", "v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "Secret": ("", "v1", "secrets"),
    "Certificate": ("cert-manager.io", "v1", "certificates"),
}
BACKGROUND = [("propagationPolicy", "Background")]
PVCS = "persistentvolumeclaims"


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
        api_client: ApiClient,
        on_error: Callable[[str, str, int | None], None] = lambda *_: None,
        before_write: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = api_client
        self._on_error = on_error
        """Told (verb, kind, HTTP code) of every error answer, expected ones included (metrics)."""
        self._before_write = before_write
        """Called before every write: the leader's fence (`leadership.Leadership.check`)."""

    def _send(
        self, verb: str, kind: str, method: str, url_path: str, body: Manifest | None = None, **options: Any
    ) -> Manifest:
        try:
            return rest.request(self._client, method, url_path, body, **options)
        except ApiException as exc:
            self._on_error(verb, kind, exc.status)
            raise

    def _write(
        self, verb: str, kind: str, method: str, url_path: str, body: Manifest | None = None, **options: Any
    ) -> None:
        self._before_write()
        self._send(verb, kind, method, url_path, body, **options)

    def create(self, namespace: str, manifest: Manifest) -> bool:
        """Create the child; one that exists already is fine only if the job controls it (False:
        nothing was written)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            self._write("create", kind, "POST", rest.path(*_KINDS[kind], namespace), manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = self._send("read", kind, "GET", rest.path(*_KINDS[kind], namespace, name))
            owner = _controller(existing)
            ours = _controller(manifest)
            if owner != ours:
                raise NotOurs(kind, name, owner or "no controller") from None
            log.debug("%s %s already exists", kind, name)
            return False
        return True

    def replace(self, namespace: str, manifest: Manifest) -> None:
        """Replace the child with the manifest (which carries the resourceVersion it was observed
        at: a 409 if it changed since, and the next reconcile plans again)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self._write("replace", kind, "PUT", rest.path(*_KINDS[kind], namespace, name), manifest)

    def read_secret_keys(self, namespace: str, name: str, owner_uid: str) -> set[str] | None:
        """The entry names of one of the job's own Secrets (by name: never listed or watched), or
        None when it does not exist; `NotOurs` when the job (`owner_uid`) does not control it. The
        values are dropped here, unread."""
        try:
            secret = self._send("read", "Secret", "GET", rest.path(*_KINDS["Secret"], namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        refs = secret.get("metadata", {}).get("ownerReferences") or []
        if not any(ref.get("controller") and ref.get("uid") == owner_uid for ref in refs):
            raise NotOurs("Secret", name, _controller(secret) or "no controller")
        return set(secret.get("data") or {})

    def patch(self, namespace: str, manifest: Manifest) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        path = rest.path(*_KINDS[kind], namespace, name)
        self._write("patch", kind, "PATCH", path, manifest, content_type=rest.MERGE_PATCH)

    def delete(self, namespace: str, kind: str, name: str) -> None:
        try:
            self._write("delete", kind, "DELETE", rest.path(*_KINDS[kind], namespace, name), query=BACKGROUND)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def claim_access_modes(self, namespace: str, name: str) -> list[str] | None:
        """A PersistentVolumeClaim's access modes (the job's data volume: can clients on several
        nodes share it?); None when it does not exist (yet: its pods then wait for it)."""
        kind = "PersistentVolumeClaim"
        try:
            claim = self._send("read", kind, "GET", rest.path("", "v1", PVCS, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        modes = (claim.get("spec") or {}).get("accessModes") or []
        return [str(mode) for mode in modes] if isinstance(modes, list) else []

    def certificate_state(self, namespace: str, name: str) -> CertificateState:
        """Whether cert-manager has issued the job's Certificate (its Ready condition), read by name
        while the job waits for it; not found (not created yet, or no cert-manager): not ready."""
        try:
            certificate = self._send("read", "Certificate", "GET", rest.path(*_KINDS["Certificate"], namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
            return CertificateState(ready=False, message="not created yet")
        return CertificateState.of(certificate)

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self._write(
                "delete",
                api.KIND,
                "DELETE",
                rest.path(api.GROUP, api.VERSION, api.PLURAL, namespace, name),
                query=BACKGROUND,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
