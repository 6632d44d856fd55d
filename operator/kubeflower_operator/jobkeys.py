"""A job's keys in its two Secrets: made before anything that mounts them, extended on scale-up.

Keys are random, so they are made here, in the handler, not in the pure plan; the manifests come
from `builders.key_secrets` and are owned by the job (deleted with it). The operator reads a
Secret only by name, only the job's own clients Secret, and only the names of its entries: which
client ordinals have a key already. It never lists or watches Secrets, and no key goes into a log
line, an event or the job's status.

Order and crashes: the server's Secret is written first, the clients' last; the clients' Secret
is the mark that the job's keys exist. When it is missing, both are (re)written with fresh keys,
so an operator stopped between the two writes leaves no mismatched CA behind.

With a cert-manager issuer (`spec.security.issuerRef`) no CA is made here: before the two Secrets
(which then hold the clients' keys only) come cert-manager's Secret, empty and owned by the job,
and the Certificate that has cert-manager fill it. Both are created once and never rewritten
(cert-manager owns their contents; an issued certificate must not be emptied again). A
Certificate that exists is left as it is: a changed `issuerRef` needs the job made again.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from kubeflower.core import environment, keys
from kubeflower.core.api import FederatedTrainingJob
from kubeflower_operator import builders
from kubeflower_operator.children import Children

log = logging.getLogger(__name__)


class NoCertificateApi(Exception):
    """The API server does not serve cert-manager's Certificate (cert-manager is not installed)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            "cert-manager's Certificate API (certificates.cert-manager.io/v1) is not served in this cluster, so "
            "spec.security.issuerRef cannot be used: install cert-manager, or remove spec.security.issuerRef (the "
            "operator then makes the job's own CA)"
        )
        self.kind, self.name = "Certificate", name


def secret_names(job_name: str) -> str:
    """Both Secrets' names, for a message about them."""
    return f"{builders.server_secret_name(job_name)}, {builders.clients_secret_name(job_name)}"


def ensure(children: Children, job: FederatedTrainingJob, owner: Any, replicas: int) -> None:
    """The job's Secrets exist and hold a key for every client ordinal below `replicas`."""
    namespace, name = job.metadata.namespace or "default", job.metadata.name
    if job.spec.security.issuer_ref is not None:  # also for an issuer named after the job was made
        _ensure_certificate(children, job, owner)
    present = children.read_secret_keys(namespace, builders.clients_secret_name(name), owner["metadata"]["uid"])
    if present is None:
        tls = None if job.spec.security.issuer_ref else keys.server_tls(environment.server_names(job))
        client_keys = {ordinal: keys.client_key() for ordinal in range(replicas)}
        for manifest in builders.key_secrets(job, tls, client_keys):
            kopf.adopt(manifest, owner=owner)
            # One of ours left by a stopped operator is rewritten; another owner's raises NotOurs.
            if not children.create(namespace, manifest):
                children.patch(namespace, {**manifest, "metadata": {"name": manifest["metadata"]["name"]}})
        made = "cert-manager Certificate" if tls is None else "CA, server certificate"
        log.info("%s/%s: made the job's keys (%s, %d client keys)", namespace, name, made, replicas)
        return
    missing = [i for i in range(replicas) if keys.client_private_key_file(i) not in present]
    if not missing:
        return
    public, private = builders.key_files({ordinal: keys.client_key() for ordinal in missing})
    # Public keys first: a client's key is registered by the server once the kubelet has
    # refreshed its mounted Secret; the private key is of no use before.
    for secret, files in ((builders.server_secret_name(name), public), (builders.clients_secret_name(name), private)):
        children.patch(namespace, {"kind": "Secret", "metadata": {"name": secret}, "data": builders.secret_data(files)})
    log.info("%s/%s: added keys for client ordinals %s", namespace, name, ", ".join(map(str, missing)))


def _ensure_certificate(children: Children, job: FederatedTrainingJob, owner: Any) -> None:
    """cert-manager's Secret (empty, the job's) and then the Certificate, each created if missing."""
    namespace = job.metadata.namespace or "default"
    for manifest in (builders.certificate_secret(job), builders.server_certificate(job)):
        kopf.adopt(manifest, owner=owner)
        try:
            children.create(namespace, manifest)
        except ApiException as exc:
            if exc.status == 404 and manifest["kind"] == "Certificate":
                raise NoCertificateApi(manifest["metadata"]["name"]) from None
            raise
