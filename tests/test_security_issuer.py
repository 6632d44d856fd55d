"""`spec.security.issuerRef`: a cert-manager issuer signs the server certificate.

Pure tests of the API, the manifests and the plan; then the real operator against the API test
server, with cert-manager's kinds served and the testbed's CA issuer (`testbed.certmanager`)
playing cert-manager, and without them (cert-manager not installed).

(Named to run after tests/test_kubeserver.py: its `test_kopf_operator_end_to_end` fails after any
test that ran the real operator in the same process, as tests/test_operator.py's tests do.)"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kubeflower import local
from kubeflower.core import contract, keys
from kubeflower.core.api import FederatedTrainingJobStatus
from kubeflower.core.validation import JobInvalid, parse_job
from kubeflower_operator import builders, reconcile
from kubeflower_operator.observed import CertificateState, Child, Observed
from kubeflower_operator.settings import Settings
from kubeflower_workload import frontproxy, processes
from testbed import certmanager
from testbed.cluster import Cluster, wait_for
from testbed.jobs import job
from testbed.kubeserver import KubeServer
from tests.conftest import running_operator
from tests.pss import restricted_violations
from tests.strict import strict_errors

SETTINGS = Settings()
ISSUED = {"issuerRef": {"name": "team-ca"}}
CRDS = Path(__file__).resolve().parents[1] / "crds"


def _volumes(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}


def test_an_issuer_takes_cert_managers_defaults_and_is_refused_with_security_off() -> None:
    ref = parse_job(job(security=ISSUED)).spec.security.issuer_ref
    assert ref is not None and (ref.name, ref.kind, ref.group) == ("team-ca", "Issuer", "cert-manager.io")
    with pytest.raises(JobInvalid, match=r"spec\.security\.issuerRef.*remove security\.issuerRef"):
        parse_job(job(security={"enabled": False, **ISSUED}))
    with pytest.raises(JobInvalid, match=r"spec\.security\.issuerRef\.kind"):
        parse_job(job(security={"issuerRef": {"name": "ca", "kind": "clusterissuer"}}))


def test_the_certificate_is_cert_managers_v1_for_every_name_of_the_server() -> None:
    parsed = parse_job(
        job(
            namespace="team-a",
            security={
                "serverNames": ["fl.example.org", "203.0.113.7"],
                "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
            },
        )
    )
    certificate = builders.server_certificate(parsed)
    assert certmanager.certificate_errors(certificate) == []
    spec = certificate["spec"]
    assert certificate["metadata"]["name"] == "digits-fedavg-server"
    assert spec["secretName"] == "digits-fedavg-server-cert"
    assert spec["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert {"digits-fedavg-server.team-a.svc", "digits-fedavg-server", "localhost", "fl.example.org"} <= set(
        spec["dnsNames"]
    )
    assert spec["ipAddresses"] == ["203.0.113.7", "127.0.0.1"]
    assert spec["privateKey"]["rotationPolicy"] == "Always" and spec["usages"] == ["server auth", "digital signature"]
    # The schema check is strict: a field cert-manager does not have, or a wrong casing, is an error.
    assert certmanager.certificate_errors({**certificate, "spec": {**spec, "dnsNames ": []}})
    assert certmanager.certificate_errors({**certificate, "spec": {**spec, "usages": ["ServerAuth"]}})
    # cert-manager's Secret, made by the operator so that the job owns it: valid, and empty.
    secret = builders.certificate_secret(parsed)
    assert strict_errors(secret) == []
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"].values()) == {""}


def test_clients_mount_only_the_ca_certificate_of_cert_managers_secret() -> None:
    parsed = parse_job(job(security=ISSUED))
    server, clients = builders.server_deployment(parsed, SETTINGS), builders.client_statefulset(parsed, SETTINGS)
    for manifest, own, files in (
        (server, "digits-fedavg-server-tls", ["ca.crt", "tls.crt", "tls.key"]),
        (clients, "digits-fedavg-client-keys", ["ca.crt"]),
    ):
        assert strict_errors(manifest) == [] and restricted_violations(manifest["spec"]["template"]["spec"]) == []
        projected = _volumes(manifest)[contract.KEYS_VOLUME]["projected"]
        assert projected["defaultMode"] == builders.KEYS_MODE
        issued = {"name": "digits-fedavg-server-cert", "items": [{"key": f, "path": f} for f in files]}
        if manifest is server:  # an issuer without ca.crt (ACME) is told by the server's log
            issued["optional"] = True
        assert projected["sources"] == [{"secret": {"name": own}}, {"secret": issued}]
    # The job's own Secrets then hold the clients' keys only: no CA, no certificate.
    pairs = {i: keys.client_key() for i in range(2)}
    server_secret, clients_secret = builders.key_secrets(parsed, None, pairs)
    assert set(server_secret["data"]) == {"client-0.pub", "client-1.pub"}
    assert set(clients_secret["data"]) == {"client-0.key", "client-1.key"}
    # Without an issuer, nothing changes: the job's own Secret alone.
    plain = _volumes(builders.client_statefulset(parse_job(job()), SETTINGS))[contract.KEYS_VOLUME]
    assert plain["secret"]["secretName"] == "digits-fedavg-client-keys"


def test_no_server_before_its_certificate_is_issued() -> None:
    parsed = parse_job(job(security=ISSUED))
    now = datetime.now(UTC)

    def planned(state: CertificateState | None) -> reconcile.Plan:
        observed = Observed(certificate=state)
        return reconcile.plan(parsed, 1, FederatedTrainingJobStatus(), observed, now, SETTINGS)

    waiting = planned(CertificateState(ready=False, message="Issuing certificate as Secret does not exist"))
    assert "Deployment" not in {m["kind"] for m in waiting.create}
    assert {m["kind"] for m in waiting.create} == {"NetworkPolicy", "Service"}
    assert waiting.keys_for == 2  # the Certificate is made with the keys, before the server
    assert (waiting.status.phase, waiting.status.reason) == ("Pending", "WaitingForCertificate")
    message = waiting.status.message or ""
    assert "Certificate digits-fedavg-server" in message and "spec.security.issuerRef: Issuer team-ca" in message
    assert "Issuing certificate as Secret does not exist" in message
    ready = planned(CertificateState(ready=True, message="Certificate is up to date and has not expired"))
    assert "Deployment" in {m["kind"] for m in ready.create} and ready.status.reason == "WaitingForServer"
    server = Child(kind="Deployment", name="digits-fedavg-server")
    running = reconcile.plan(
        parsed, 1, FederatedTrainingJobStatus(), Observed(children={"Deployment": server}), now, SETTINGS
    )
    assert running.status.reason != "WaitingForCertificate"  # not read once the server exists


def test_a_certificates_message_is_bounded_and_printable() -> None:
    said = "x\x1b[31m" + "y" * 1000
    state = CertificateState.of({"status": {"conditions": [{"type": "Ready", "status": "False", "message": said}]}})
    assert not state.ready and "\x1b" not in state.message and len(state.message) == 300
    assert CertificateState.of({}).message == "not issued yet"


# The real operator.


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        server.kubectl("apply", "-f", str(CRDS), "--validate=false")
        yield server


def _certificate(cluster: Cluster, name: str) -> dict[str, Any] | None:
    return cluster.kube.get(certmanager.GROUP_VERSION, "certificates", cluster.ns, f"{name}-server")


def _install_ca_issuer(cluster: Cluster) -> bytes:
    ca = certmanager.make_ca()
    cluster.kube.create(certmanager.ca_secret(cluster.ns, "team-ca", ca))
    cluster.kube.create(certmanager.ca_issuer(cluster.ns, "team-ca", "team-ca"))
    return ca[0]


def test_the_server_waits_for_cert_manager_and_the_certificate_goes_with_the_job(
    kube: KubeServer, tmp_path: Path
) -> None:
    certmanager.install(kube)
    cluster = Cluster.new_namespace(kube, "issuer", tmp_path)
    with running_operator(kube), certmanager.CaIssuer(kube) as issuer:
        cluster.apply(job("fl", security=ISSUED))
        certificate = wait_for(lambda: _certificate(cluster, "fl"), 20, "the Certificate")
        uid = cluster.job("fl")["metadata"]["uid"]  # type: ignore[index]
        written = {k: v for k, v in certificate.items() if k != "status"}  # the issuer may have set one already
        assert certmanager.certificate_errors(written) == []
        assert [(r["uid"], r["controller"]) for r in certificate["metadata"]["ownerReferences"]] == [(uid, True)]
        # No Issuer yet: cert-manager cannot issue, and the job says so (no pod waits in ContainerCreating).
        status = cluster.wait_status("fl", lambda s: s.get("reason") == "WaitingForCertificate")
        assert "Certificate fl-server" in status["message"] and "Issuer team-ca" in status["message"]
        wait_for(lambda: "not found" in cluster.status("fl").get("message", ""), 20, "the issuer's own words")
        time.sleep(1.5)  # several reconciles: still no server
        assert cluster.children("fl")["Deployment"] == []

        ca_pem = _install_ca_issuer(cluster)
        (server,) = wait_for(lambda: cluster.children("fl")["Deployment"], 20, "the server, once issued")
        assert issuer.errors == []
        secrets = {s["metadata"]["name"]: s for s in cluster.children("fl")["Secret"]}
        assert sorted(secrets) == ["fl-client-keys", "fl-server-cert", "fl-server-tls"]
        issued = secrets["fl-server-cert"]
        assert issued["metadata"]["ownerReferences"][0]["uid"] == uid  # cert-manager kept the job's ownership
        assert base64.b64decode(issued["data"]["ca.crt"]) == ca_pem
        cert = x509.load_pem_x509_certificate(base64.b64decode(issued["data"]["tls.crt"]))
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        assert set(secrets["fl-server-tls"]["data"]) == {"client-0.pub", "client-1.pub"}
        assert set(secrets["fl-client-keys"]["data"]) == {"client-0.key", "client-1.key"}
        volume = _volumes(server)[contract.KEYS_VOLUME]
        assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == ["fl-server-tls", "fl-server-cert"]
        cluster.wait_status("fl", lambda s: s.get("reason") == "WaitingForServer")

        cluster.kubectl("delete", "ftj", "fl")
        wait_for(lambda: _certificate(cluster, "fl") is None, 20, "the Certificate gone with the job")
        wait_for(lambda: cluster.children("fl")["Secret"] == [], 20, "every Secret gone with the job")


def test_without_cert_manager_the_job_names_the_field_and_the_fix(kube: KubeServer, tmp_path: Path) -> None:
    cluster = Cluster.new_namespace(kube, "no-cert-manager", tmp_path)
    with running_operator(kube):
        cluster.apply(job("fl", security=ISSUED))
        status = cluster.wait_status("fl", lambda s: s.get("reason") == "ChildRefused")
        assert "Certificate fl-server refused (404)" in status["message"]
        assert "spec.security.issuerRef" in status["message"] and "install cert-manager" in status["message"]
        accepted = next(c for c in status["conditions"] if c["type"] == "ChildrenAccepted")
        assert accepted["status"] == "False" and "install cert-manager" in accepted["message"]
        (event,) = wait_for(lambda: cluster.events("fl", "ChildRefused"), 20, "a Warning event")
        assert event["type"] == "Warning" and "spec.security.issuerRef" in event["message"]
        assert cluster.children("fl")["Deployment"] == []
        # cert-manager installed afterwards: the job goes on by itself.
        certmanager.install(kube)
        _install_ca_issuer(cluster)
        with certmanager.CaIssuer(kube):
            wait_for(lambda: cluster.children("fl")["Deployment"], 30, "the server, once cert-manager is there")


def _served_serial(port: int) -> int | None:
    """The serial number of the certificate the proxy presents now (None: not listening yet)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def _install(folder: Path, tls: keys.ServerTLS) -> None:
    """As the kubelet brings a renewed Secret in: every file replaced whole."""
    for name, data in tls.files().items():
        staged = folder / f".{name}.new"
        staged.write_bytes(data)
        staged.replace(folder / name)


def test_the_front_proxy_serves_a_renewed_certificate(tmp_path: Path) -> None:
    """cert-manager renews in place: the server's watch sees the new tls.crt once, and nginx,
    told to reload, presents it to new connections."""
    folder = tmp_path / "tls"
    folder.mkdir()
    first, renewed = keys.server_tls(["localhost"]), keys.server_tls(["localhost"])
    _install(folder, first)
    files = frontproxy.TLSFiles(folder / keys.CA_CERT, folder / keys.SERVER_CERT, folder / keys.SERVER_KEY)
    port, upstream = processes.free_ports(2)
    proxy = frontproxy.start(frontproxy.Listen("127.0.0.1", port, upstream, tmp_path / "run"), files)
    try:
        serial = x509.load_pem_x509_certificate(first.cert).serial_number
        wait_for(lambda: _served_serial(port) == serial, 20, "the first certificate served")
        watch = frontproxy.CertificateWatch(files)
        assert not watch.changed()
        _install(folder, renewed)
        assert watch.changed() and not watch.changed()
        frontproxy.reload(proxy)
        serial = x509.load_pem_x509_certificate(renewed.cert).serial_number
        wait_for(lambda: _served_serial(port) == serial, 20, "the renewed certificate served")
        assert proxy.poll() is None
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)


def test_local_mode_says_in_one_line_that_it_uses_its_own_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job("issued", security=ISSUED)))
    started = []

    def federation(*args: Any, **kwargs: Any) -> Any:  # the federation itself is `kubeflower run`'s own tests'
        started.append(args[0])
        raise local.LocalRunError("not started in this test")

    monkeypatch.setattr(local, "_federation", federation)
    assert local.run_job(path, tmp_path / "out") == 1
    said = [line for line in capsys.readouterr().out.splitlines() if "issuerRef" in line]
    assert said == [
        "spec.security.issuerRef (Issuer team-ca) is for a cluster with cert-manager: this local run uses "
        "throwaway keys of its own instead"
    ]
    assert started and started[0].spec.security.enabled
