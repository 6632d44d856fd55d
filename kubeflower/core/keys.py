"""A job's keys and certificates, made by pure builders (given only the names to certify).

Flower's connections are secured in two ways, and a job gets what both need:
- TLS: a certificate authority made for the job alone, and a server certificate it signs whose
  names cover the server Service's DNS names (what the SuperNodes dial), `localhost` and
  127.0.0.1 (what the server pod's own processes dial: the front proxy, the run submission, the
  SuperLink's SuperExec). The CA's private key signs that one certificate and is then thrown away:
  nothing can sign another certificate for the job, so it is never stored anywhere.
- SuperNode authentication: one ECDSA (NIST P-256) key pair per client. Flower ties a node to its
  public key (registering a key twice is refused, and two SuperNodes with one key would be one
  node), so a key per job is not possible; the key of client N authenticates the client with
  ordinal N. The SuperLink knows the public keys (registered through its Control API, from the
  server pod); the SuperNode signs every request with the private key.

The formats are the ones Flower reads: PEM certificates and keys for the SuperLink and the front
proxy, PEM public keys (SubjectPublicKeyInfo) for registration, OpenSSH private keys for
`flower-supernode --auth-supernode-private-key`.

Nothing here logs, prints or returns key material in a message: errors name files, not contents.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATE_DAYS = 365
"""Lifetime of a job's CA and server certificate. A federation that runs longer needs new keys:
delete and re-create the job (README, "Lifetime and rotation")."""
LOCAL_NAMES = ("localhost", "127.0.0.1")
"""Names every server certificate covers: the server pod's own processes dial loopback."""

# File names, the same in the Secrets, the pods' mounts and `kubeflower run`'s private folder.
CA_CERT = "ca.crt"
SERVER_CERT = "tls.crt"
SERVER_KEY = "tls.key"


def client_private_key_file(ordinal: int) -> str:
    return f"client-{ordinal}.key"


def client_public_key_file(ordinal: int) -> str:
    return f"client-{ordinal}.pub"


@dataclass(frozen=True)
class ServerTLS:
    """The CA's certificate (what clients trust) and the server's certificate and private key."""

    ca_cert: bytes
    cert: bytes
    key: bytes

    def files(self) -> dict[str, bytes]:
        return {CA_CERT: self.ca_cert, SERVER_CERT: self.cert, SERVER_KEY: self.key}


@dataclass(frozen=True)
class ClientKey:
    """One SuperNode's authentication key pair."""

    private_openssh: bytes
    public_pem: bytes


COMMON_NAME_MAX = 64
"""X.509's upper bound on a common name (RFC 5280 ub-common-name)."""


def server_tls(names: list[str], now: datetime.datetime | None = None) -> ServerTLS:
    """A fresh CA and a server certificate for `names` (DNS names or IP addresses) and loopback."""
    now = now or datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=CERTIFICATE_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeflower job CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    all_names = list(dict.fromkeys([*names, *LOCAL_NAMES]))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name(all_names))]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in all_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServerTLS(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def client_key() -> ClientKey:
    """A fresh SuperNode key pair (NIST P-256, as `ssh-keygen -t ecdsa -b 256` makes).

    Flower accepts any NIST curve; P-256 is the cheapest to sign and verify with, which a SuperNode
    does on every request (as the TLS handshakes do with the server certificate's key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return ClientKey(
        private_openssh=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        public_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def common_name(names: list[str]) -> str:
    """The certificate's subject: the first name that fits. Clients check the SANs; the subject
    only names the certificate, and X.509 caps a common name at 64 characters, which
    `<job>-server.<namespace>.svc` passes with long names (`localhost` always fits)."""
    return next(n for n in [*names, LOCAL_NAMES[0]] if len(n) <= COMMON_NAME_MAX)


def is_ip_address(name: str) -> bool:
    """An IP address (an iPAddress SAN), not a DNS name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _general_name(name: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(name)) if is_ip_address(name) else x509.DNSName(name)
