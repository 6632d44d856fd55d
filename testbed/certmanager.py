"""cert-manager where it cannot run: its Certificate and Issuer kinds, a strict schema of the
Certificate fields the operator writes, and a CA issuer that issues as cert-manager's does.

cert-manager is a Go controller from a registry this machine cannot reach, so the tests use:

- `crds()`: CustomResourceDefinitions for `certificates`, `issuers` and `clusterissuers`
  (cert-manager.io/v1), written here, for the API test server to serve those kinds (it serves
  any applied CRD). Their schemas are ours, not cert-manager's: a Certificate's spec is
  `CERTIFICATE_SPEC_SCHEMA`, the others take any object (the API test server validates nothing).
- `CERTIFICATE_SPEC_SCHEMA`: a strict JSON schema of the subset of cert-manager v1's
  `CertificateSpec` that `kubeflower_operator.builders.server_certificate` uses, written from
  cert-manager's API reference (field names, casing, types, the enums' values); any other field
  is refused (`additionalProperties: false`), so a misspelt or invented field fails a test.
  `certificate_errors` checks a manifest against it.
- `CaIssuer`: what cert-manager's CA issuer does for a Certificate that names an `Issuer` (or
  `ClusterIssuer`) with `spec.ca.secretName`: it signs a certificate for the Certificate's names
  with the CA of that Secret (`tls.crt`, `tls.key`), writes the Certificate's Secret (type
  `kubernetes.io/tls`; `tls.crt`, `tls.key`, `ca.crt`; cert-manager's annotations; the
  `secretTemplate`'s labels; an existing Secret is updated, its owners kept) and sets the
  Certificate's `Ready` condition.

Where `CaIssuer` differs from cert-manager, knowingly: it polls the Certificates (every 0.2 s)
instead of watching them; it issues at once, with no CertificateRequest, no temporary key
Secret, no events; ECDSA keys only (sizes 256 and 384), PKCS#8; no renewal by itself
(`renew(namespace, name)` does what a renewal does, on demand: a new key and certificate in the
same Secret); a missing issuer or CA Secret makes the Certificate `Ready: False` with a message,
where cert-manager says so on its CertificateRequest; ClusterIssuers read their CA from the
namespace `cert-manager` (cert-manager's default cluster resource namespace); certificates
last 90 days (cert-manager's default `duration`).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import threading
from types import TracebackType
from typing import Any

import jsonschema
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed.kubeserver import KubeServer

GROUP_VERSION = "cert-manager.io/v1"
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
DEFAULT_DURATION = datetime.timedelta(days=90)

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]
CERTIFICATE_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": _NAME,
        "secretTemplate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": _STRINGS,
        "ipAddresses": _STRINGS,
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            },
        },
        "issuerRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": _NAME, "kind": {"type": "string"}, "group": {"type": "string"}},
        },
    },
}
"""The Certificate fields the operator writes, as cert-manager v1 types them; nothing else allowed."""


def certificate_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way `manifest` is not a cert-manager v1 Certificate of the fields above."""
    errors = []
    if (manifest.get("apiVersion"), manifest.get("kind")) != (GROUP_VERSION, "Certificate"):
        errors.append(f"not a {GROUP_VERSION} Certificate: {manifest.get('apiVersion')} {manifest.get('kind')}")
    if set(manifest) - {"apiVersion", "kind", "metadata", "spec"}:
        errors.append(f"unknown top-level fields {sorted(set(manifest) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
    validator = jsonschema.Draft202012Validator(CERTIFICATE_SPEC_SCHEMA)
    errors += [
        f"spec.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest.get("spec"))
    ]
    return errors


def _crd(kind: str, plural: str, scope: str, spec_schema: dict[str, Any]) -> dict[str, Any]:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.cert-manager.io"},
        "spec": {
            "group": "cert-manager.io",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema, "status": open_object},
                        }
                    },
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    """cert-manager's Certificate, Issuer and ClusterIssuer kinds, for the API test server."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return [
        _crd("Certificate", "certificates", "Namespaced", CERTIFICATE_SPEC_SCHEMA),
        _crd("Issuer", "issuers", "Namespaced", open_object),
        _crd("ClusterIssuer", "clusterissuers", "Cluster", open_object),
    ]


def install(kube: KubeServer) -> None:
    """Serve cert-manager's kinds (as installing cert-manager's CRDs does)."""
    for crd in crds():
        kube.create(crd)


def make_ca(common_name: str = "testbed issuer CA") -> tuple[bytes, bytes]:
    """A CA (certificate PEM, PKCS#8 key PEM), as a user puts in an Issuer's `spec.ca.secretName`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pkcs8(key)


def ca_issuer(namespace: str, name: str, secret_name: str) -> dict[str, Any]:
    """An Issuer of cert-manager's CA type."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Issuer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ca": {"secretName": secret_name}},
    }


def ca_secret(namespace: str, name: str, ca: tuple[bytes, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": _b64(ca[0]), "tls.key": _b64(ca[1])},
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class IssuingError(Exception):
    """Why a Certificate cannot be issued (its Ready condition's message)."""


_USAGE_OIDS = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}
_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1()}


class CaIssuer:
    """cert-manager's CA issuer, for the Certificates of an API test server (see the module)."""

    def __init__(self, kube: KubeServer, interval: float = 0.2) -> None:
        self.kube = kube
        self.interval = interval
        self.issued: list[tuple[str, str]] = []
        """(namespace, name) of each issuance, renewals included, in order."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testbed-ca-issuer", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> CaIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for certificate in self.kube.list(GROUP_VERSION, "certificates"):
                    if not _up_to_date(certificate, RETRY_AFTER):
                        self._issue(certificate)
            except Exception as exc:  # the test reads `errors`; the loop must go on
                self.errors.append(repr(exc))

    def renew(self, namespace: str, name: str) -> None:
        """A renewal, now: a new key (rotationPolicy Always) and certificate in the same Secret."""
        certificate = self.kube.get(GROUP_VERSION, "certificates", namespace, name)
        if certificate is None:
            raise LookupError(f"Certificate {namespace}/{name} not found")
        self._issue(certificate)

    def _issue(self, certificate: dict[str, Any]) -> None:
        meta, spec = certificate["metadata"], certificate["spec"]
        namespace = meta["namespace"]
        try:
            ca_cert, ca_key = self._ca(namespace, spec["issuerRef"])
            key, cert = _sign(spec, ca_cert, ca_key)
        except IssuingError as exc:
            self._ready(certificate, False, "Failed", str(exc))
            return
        pem = cert.public_bytes(serialization.Encoding.PEM)
        ref = spec["issuerRef"]
        names = [*(spec.get("dnsNames") or [])]
        annotations = {
            "cert-manager.io/certificate-name": meta["name"],
            "cert-manager.io/issuer-name": ref["name"],
            "cert-manager.io/issuer-kind": ref.get("kind", "Issuer"),
            "cert-manager.io/issuer-group": ref.get("group", "cert-manager.io"),
            "cert-manager.io/common-name": spec.get("commonName", ""),
            "cert-manager.io/alt-names": ",".join(names),
            "cert-manager.io/ip-sans": ",".join(spec.get("ipAddresses") or []),
            "cert-manager.io/uri-sans": "",
            **((spec.get("secretTemplate") or {}).get("annotations") or {}),
        }
        labels = {"controller.cert-manager.io/fao": "true", **((spec.get("secretTemplate") or {}).get("labels") or {})}
        data = {
            "tls.crt": _b64(pem),
            "tls.key": _b64(_pkcs8(key)),
            "ca.crt": _b64(ca_cert.public_bytes(serialization.Encoding.PEM)),
        }
        secret_name = spec["secretName"]
        existing = self.kube.get("v1", "secrets", namespace, secret_name)
        if existing is None:
            metadata = {"name": secret_name, "namespace": namespace, "labels": labels, "annotations": annotations}
            self.kube.create(
                {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "kubernetes.io/tls", "data": data}
            )
        elif existing.get("type") != "kubernetes.io/tls":
            self._ready(certificate, False, "Failed", f"Secret {secret_name} is not of type kubernetes.io/tls")
            return
        else:  # cert-manager applies its fields; the Secret's other fields (its owners) stay
            patch = {"metadata": {"labels": labels, "annotations": annotations}, "data": data}
            self.kube.patch("v1", "secrets", namespace, secret_name, patch)
        self.issued.append((namespace, meta["name"]))
        self._ready(certificate, True, "Ready", "Certificate is up to date and has not expired", cert)

    def _ca(self, namespace: str, ref: dict[str, Any]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        kind, group = ref.get("kind", "Issuer"), ref.get("group", "cert-manager.io")
        if group != "cert-manager.io" or kind not in ("Issuer", "ClusterIssuer"):
            raise IssuingError(f"no issuer of kind {kind} in group {group} here")
        plural, where = ("issuers", namespace) if kind == "Issuer" else ("clusterissuers", None)
        issuer = self.kube.get(GROUP_VERSION, plural, where, ref["name"])
        if issuer is None:
            raise IssuingError(f'Referenced "{kind}" not found: {ref["name"]}')
        secret_name = ((issuer.get("spec") or {}).get("ca") or {}).get("secretName")
        if not secret_name:
            raise IssuingError(f"{kind} {ref['name']} is not a CA issuer (no spec.ca.secretName)")
        secret_namespace = namespace if kind == "Issuer" else CLUSTER_RESOURCE_NAMESPACE
        secret = self.kube.get("v1", "secrets", secret_namespace, secret_name)
        data = (secret or {}).get("data") or {}
        if "tls.crt" not in data or "tls.key" not in data:
            raise IssuingError(f"the CA Secret {secret_name} of {kind} {ref['name']} is missing or incomplete")
        key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IssuingError("the testbed's CA issuer signs with ECDSA CA keys only")
        return x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"])), key

    def _ready(
        self,
        certificate: dict[str, Any],
        ok: bool,
        reason: str,
        message: str,
        cert: x509.Certificate | None = None,
    ) -> None:
        meta = certificate["metadata"]
        condition = {
            "type": "Ready",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "observedGeneration": meta.get("generation", 1),
            "lastTransitionTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        status: dict[str, Any] = {"conditions": [condition]}
        if cert is not None:
            status["notBefore"] = cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            status["notAfter"] = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            status["revision"] = int((certificate.get("status") or {}).get("revision") or 0) + 1
        self.kube.patch_status(GROUP_VERSION, "certificates", meta["namespace"], meta["name"], status)


RETRY_AFTER = datetime.timedelta(seconds=1)
"""A failed issuance is tried again after this (cert-manager backs off exponentially, from seconds)."""


def _up_to_date(certificate: dict[str, Any], retry_after: datetime.timedelta) -> bool:
    """Issued for its current spec, or failed for it less than `retry_after` ago."""
    generation = certificate["metadata"].get("generation", 1)
    conditions = (certificate.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("observedGeneration") != generation:
        return False
    if ready.get("status") == "True":
        return True
    since = datetime.datetime.strptime(ready["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return datetime.datetime.now(datetime.UTC) - since < retry_after


def _sign(
    spec: dict[str, Any], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    private = spec.get("privateKey") or {}
    if private.get("algorithm", "RSA") != "ECDSA" or private.get("size", 256) not in _CURVES:
        raise IssuingError("the testbed's CA issuer makes ECDSA keys of size 256 or 384 only")
    key = ec.generate_private_key(_CURVES[private.get("size", 256)])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.get("ipAddresses") or []]
    now = datetime.datetime.now(datetime.UTC)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"])] if spec.get("commonName") else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + DEFAULT_DURATION)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
    usages = [_USAGE_OIDS[u] for u in spec.get("usages") or [] if u in _USAGE_OIDS]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())
