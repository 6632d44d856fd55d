"""Security by default, as rendered: TLS and SuperNode authentication, per-job keys in Secrets
mounted read-only, a NetworkPolicy for every service type, the front proxy's filter, and
security off only where the API allows it."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key, load_ssh_private_key

from kubeflower.core import api, contract, keys
from kubeflower.core.environment import server_names
from kubeflower.core.validation import JobInvalid, parse_job
from kubeflower_operator import builders
from kubeflower_operator.settings import Settings
from kubeflower_workload import client, frontproxy, server
from testbed.jobs import job

SETTINGS = Settings()
SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer"]


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def _env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(manifest)["env"]}


@pytest.mark.parametrize("service", SERVICE_TYPES)
def test_no_insecure_flag_anywhere_by_default(service: str) -> None:
    parsed = parse_job(job(service={"type": service}))
    rendered = yaml.safe_dump_all(builders.all_children(parsed, SETTINGS))
    assert "insecure" not in rendered.lower()
    server_env, client_env = (
        _env(builders.server_deployment(parsed, SETTINGS)),
        _env(builders.client_statefulset(parsed, SETTINGS)),
    )
    assert server_env[contract.ENV_SECURITY] == client_env[contract.ENV_SECURITY] == contract.SECURITY_ENABLED
    # What the entry points make of that environment: TLS and authentication, no --insecure.
    settings = server.Settings.from_env(server_env)
    tls = frontproxy.TLSFiles(Path("ca"), Path("crt"), Path("key"))
    command = server.superlink_command(settings, tls)
    assert "--insecure" not in command and "--enable-supernode-auth" in command
    assert command[command.index("--host") + 1] == "127.0.0.1", "the SuperLink listens on loopback only"


def test_the_client_command_carries_its_own_key_and_the_ca(tmp_path: Path) -> None:
    (tmp_path / keys.CA_CERT).write_text("ca")
    (tmp_path / keys.client_private_key_file(3)).write_text("key")
    env = {
        contract.ENV_SUPERLINK: "j-server.ns.svc:9092",
        contract.ENV_NUM_PARTITIONS: "4",
        contract.ENV_POD_NAME: "j-clients-3",
        contract.ENV_CLIENT_KEYS_DIR: str(tmp_path),
    }
    command = client.supernode_command(env)
    assert "--insecure" not in command
    assert command[command.index("--auth-supernode-private-key") + 1] == str(tmp_path / "client-3.key")
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    with pytest.raises(client.SettingsError, match="no key for client 2"):
        client.supernode_command({**env, contract.ENV_POD_NAME: "j-clients-2"})
    assert "--insecure" in client.supernode_command({**env, contract.ENV_SECURITY: contract.SECURITY_DISABLED})


@pytest.mark.parametrize("service", SERVICE_TYPES)
def test_a_network_policy_for_every_service_type_before_the_server(service: str) -> None:
    parsed = parse_job(job(service={"type": service}))
    kinds = [m["kind"] for m in builders.server_children(parsed, SETTINGS)]
    assert kinds[:2] == ["NetworkPolicy", "NetworkPolicy"] and kinds.index("Deployment") > 1
    policy = builders.server_network_policy(parsed, SETTINGS)
    fleet, status = policy["spec"]["ingress"]
    assert fleet["ports"] == [{"port": contract.SUPERLINK_PORT, "protocol": "TCP"}]
    if service == "ClusterIP":
        assert fleet["from"] == [{"podSelector": {"matchLabels": builders.selector_labels("digits-fedavg", "clients")}}]
    else:
        assert "from" not in fleet, "clients outside the cluster: from everywhere unless fleetFrom says"
    assert status["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflower-system"}}}
    ]


def test_fleet_sources_and_client_egress_come_from_the_spec() -> None:
    block = {"ipBlock": {"cidr": "203.0.113.0/24"}}
    egress = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    parsed = parse_job(
        job(service={"type": "LoadBalancer"}, networkPolicy={"fleetFrom": [block], "clientEgress": [egress]})
    )
    fleet = builders.server_network_policy(parsed, SETTINGS)["spec"]["ingress"][0]
    assert block in fleet["from"] and len(fleet["from"]) == 2, "the job's own clients stay allowed"
    clients = builders.clients_network_policy(parsed)["spec"]
    assert clients["ingress"] == [] and set(clients["policyTypes"]) == {"Ingress", "Egress"}
    assert clients["egress"][-1] == egress and len(clients["egress"]) == 3


@pytest.mark.parametrize("service", ["NodePort", "LoadBalancer"])
def test_the_api_refuses_security_off_outside_the_cluster(service: str) -> None:
    with pytest.raises(JobInvalid, match=r"spec\.security\.enabled"):
        parse_job(job(service={"type": service}, security={"enabled": False}))
    plain = parse_job(job(security={"enabled": False}))
    rendered = builders.all_children(plain, SETTINGS)
    assert all(
        v.get("secret") is None
        for m in rendered
        if "template" in m.get("spec", {})
        for v in m["spec"]["template"]["spec"]["volumes"]
    )
    assert _env(builders.server_deployment(plain, SETTINGS))[contract.ENV_SECURITY] == contract.SECURITY_DISABLED


def test_keys_are_mounted_read_only_from_the_jobs_secrets() -> None:
    parsed = parse_job(job())
    for manifest, secret, path in (
        (builders.server_deployment(parsed, SETTINGS), "digits-fedavg-server-tls", contract.TLS_DIR),
        (builders.client_statefulset(parsed, SETTINGS), "digits-fedavg-client-keys", contract.CLIENT_KEYS_DIR),
    ):
        volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
        assert volumes[contract.KEYS_VOLUME]["secret"] == {"secretName": secret, "defaultMode": 0o440}
        mount = next(m for m in _container(manifest)["volumeMounts"] if m["name"] == contract.KEYS_VOLUME)
        assert mount == {"name": contract.KEYS_VOLUME, "mountPath": path, "readOnly": True}


def test_a_job_with_the_longest_names_gets_a_certificate_for_all_of_them() -> None:
    """A namespace of 63 characters and the longest job name: the Service's DNS names pass X.509's
    64-character common name, so the subject takes the first name that fits; every name stays in
    the SANs. (The API test server's namespaces are named after the tests: long ones met this.)"""
    namespace, name = "n" * 63, "j" * api.MAX_NAME_LENGTH
    parsed = parse_job(job(name=name, namespace=namespace))
    cert = x509.load_pem_x509_certificate(keys.server_tls(server_names(parsed)).cert)
    (common_name,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert common_name.value == f"{name}-server"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{name}-server.{namespace}.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)


def test_the_secrets_hold_what_each_side_needs_and_no_ca_key() -> None:
    parsed = parse_job(job(namespace="team-a", security={"serverNames": ["fl.example.org", "203.0.113.7"]}))
    tls = keys.server_tls(server_names(parsed))
    pairs = {i: keys.client_key() for i in range(2)}
    server_secret, clients_secret = builders.key_secrets(parsed, tls, pairs)
    server_files = {k: base64.b64decode(v) for k, v in server_secret["data"].items()}
    client_files = {k: base64.b64decode(v) for k, v in clients_secret["data"].items()}
    assert set(server_files) == {"ca.crt", "tls.crt", "tls.key", "client-0.pub", "client-1.pub"}
    assert set(client_files) == {"ca.crt", "client-0.key", "client-1.key"}
    assert not any(b"PRIVATE KEY" in v for k, v in server_files.items() if k != "tls.key")
    # Each client's private key matches the public key the server registers.
    for i in range(2):
        private = load_ssh_private_key(client_files[f"client-{i}.key"], None)
        assert (
            private.public_key().public_numbers()
            == load_pem_public_key(server_files[f"client-{i}.pub"]).public_numbers()
        )  # type: ignore[union-attr]
    cert = x509.load_pem_x509_certificate(server_files["tls.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"digits-fedavg-server.team-a.svc", "digits-fedavg-server", "fl.example.org", "localhost"} <= set(
        names.get_values_for_type(x509.DNSName)
    )
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("203.0.113.7")} <= set(
        names.get_values_for_type(x509.IPAddress)
    )
    ca = x509.load_pem_x509_certificate(server_files["ca.crt"])
    cert.verify_directly_issued_by(ca)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert (
        datetime.timedelta(days=keys.CERTIFICATE_DAYS - 1) < lifetime <= datetime.timedelta(days=keys.CERTIFICATE_DAYS)
    )


def test_the_proxy_forwards_only_the_fleet_api() -> None:
    listen = frontproxy.Listen("0.0.0.0", 9092, 9095, Path("/tmp/x"))
    conf = frontproxy.config(listen, frontproxy.TLSFiles(Path("/k/ca.crt"), Path("/k/tls.crt"), Path("/k/tls.key")))
    assert "proxy_pass https://superlink;" in conf and "proxy_ssl_verify on;" in conf
    assert "server 127.0.0.1:9095;" in conf and "listen 0.0.0.0:9092 ssl;" in conf
    assert "client_max_body_size 16m;" in conf
    assert conf.count("proxy_pass") == 1, "one forwarding location: the Fleet API's"
    plain = frontproxy.config(listen, None)
    assert "proxy_pass http://superlink;" in plain and "ssl" not in plain.replace("ssl_", "")
