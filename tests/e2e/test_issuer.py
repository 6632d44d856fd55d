"""End to end with `spec.security.issuerRef`: a cert-manager CA Issuer (the testbed's, playing
cert-manager: `testbed.certmanager`) signs the server certificate; the clients trust only that
issuer's CA, see none of the server's keys, and the job runs to Succeeded with real Flower; the
Certificate and every Secret go with the job."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509

from kubeflower.core import contract
from testbed import certmanager
from testbed.cluster import Cluster, wait_for
from testbed.jobs import job

pytestmark = pytest.mark.e2e
RUN = 240
GONE = 60


def _keys_folder(cluster: Cluster, pod: str) -> Path:
    """The pod's keys volume, as its containers see it (the pod runner's folder for it)."""
    uid = cluster.kube.get("v1", "pods", cluster.ns, pod)["metadata"]["uid"]  # type: ignore[index]
    return cluster.runner.workdir / "pods" / uid / "volumes" / contract.KEYS_VOLUME


def test_a_job_naming_a_ca_issuer_runs_with_the_issuers_certificate(cluster: Cluster) -> None:
    certmanager.install(cluster.kube)
    ca_pem, ca_key = certmanager.make_ca()
    cluster.kube.create(certmanager.ca_secret(cluster.ns, "team-ca", (ca_pem, ca_key)))
    cluster.kube.create(certmanager.ca_issuer(cluster.ns, "team-ca", "team-ca"))
    with certmanager.CaIssuer(cluster.kube) as issuer:
        cluster.apply_documents("job", [job("issued", rounds=3, security={"issuerRef": {"name": "team-ca"}})])
        cluster.wait_status("issued", lambda s: s.get("phase") == "Running" and s.get("clients") == "2/2", RUN)
        # A client's keys: the issuer's CA and the clients' own keys; nothing of the server's.
        folder = _keys_folder(cluster, "issued-clients-0")
        assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "client-0.key", "client-1.key"]
        assert (folder / "ca.crt").read_bytes() == ca_pem
        server_pod = cluster.pods("issued", "server")[0]["metadata"]["name"]
        served = x509.load_pem_x509_certificate((_keys_folder(cluster, server_pod) / "tls.crt").read_bytes())
        served.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        status = cluster.wait_status("issued", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end")
        assert status["phase"] == "Succeeded", status
        assert issuer.errors == [] and issuer.issued == [(cluster.ns, "issued-server")]
    server_log = "".join(
        cluster.runner.logs(cluster.ns, p["metadata"]["name"], "server") for p in cluster.pods("issued", "server")
    )
    assert "TLS and SuperNode authentication" in server_log and "registered 2 SuperNode public key" in server_log
    uid = cluster.job("issued")["metadata"]["uid"]  # type: ignore[index]
    certificate = cluster.kube.get(certmanager.GROUP_VERSION, "certificates", cluster.ns, "issued-server")
    assert certificate is not None and certificate["metadata"]["ownerReferences"][0]["uid"] == uid
    secrets = {s["metadata"]["name"]: s for s in cluster.children("issued")["Secret"]}
    assert base64.b64decode(secrets["issued-server-cert"]["data"]["ca.crt"]) == ca_pem

    cluster.kubectl("delete", "ftj", "issued", "--wait=true", "--timeout=60s", timeout=90)
    wait_for(lambda: not any(cluster.children("issued").values()), GONE, "every object, the Secrets too, gone")
    assert cluster.kube.get(certmanager.GROUP_VERSION, "certificates", cluster.ns, "issued-server") is None
