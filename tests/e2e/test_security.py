"""End to end with security on (the default): a LoadBalancer job, whose Flower port the
NetworkPolicy opens to everyone, so only the server pod's front proxy stands between the network
and Flower's Control API. Probed from the job's own client pod and from a pod outside the job
(the operator's, in another namespace); then the job runs to Succeeded with TLS and SuperNode
authentication, no key shows anywhere, and its Secrets go with it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed import fleetprobe
from testbed.cluster import REPO, Cluster, wait_for
from testbed.jobs import job

pytestmark = pytest.mark.e2e
RUN = 240
GONE = 60


def _probe_from(cluster: Cluster, namespace: str, pod: str, service: dict[str, Any], ca: Path) -> dict[str, Any]:
    """The probe, run inside `pod`'s network namespace against the job's Service."""
    pid = cluster.runner.container_pid(namespace, pod)
    assert pid is not None, f"{pod} runs no container"
    name = f"{service['metadata']['name']}.{cluster.ns}.svc"
    done = subprocess.run(
        [
            *("nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-m", "testbed.fleetprobe"),
            *(service["spec"]["clusterIP"], "9092", name, str(ca)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


def test_a_load_balancer_job_exposes_the_fleet_api_only_and_keeps_its_keys(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply_documents("job", [job("open", rounds=3, service={"type": "LoadBalancer"})])
    status = cluster.wait_status("open", lambda s: s.get("phase") == "Running" and s.get("clients") == "2/2", RUN)
    secrets = {s["metadata"]["name"]: s for s in cluster.children("open")["Secret"]}
    assert set(secrets) == {"open-server-tls", "open-client-keys"}
    uid = cluster.job("open")["metadata"]["uid"]
    assert all(s["metadata"]["ownerReferences"][0]["uid"] == uid for s in secrets.values())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(secrets["open-client-keys"]["data"]["ca.crt"]))
    service = cluster.kube.get("v1", "services", cluster.ns, "open-server")
    policy = cluster.kube.get("networking.k8s.io/v1", "networkpolicies", cluster.ns, "open-server")
    assert "from" not in policy["spec"]["ingress"][0], "a LoadBalancer job's Flower port is open to every source"

    operator = cluster.operator_pods()[0]["metadata"]
    for namespace, pod in ((cluster.ns, "open-clients-0"), (operator["namespace"], operator["name"])):
        answers = _probe_from(cluster, namespace, pod, service, ca)
        assert answers[fleetprobe.FLEET] == 401, (pod, answers)
        assert {p: answers[p] for p in fleetprobe.REFUSED} == dict.fromkeys(fleetprobe.REFUSED, 404), (pod, answers)
        assert answers[fleetprobe.PLAIN] == 400, (pod, answers)

    status = cluster.wait_status("open", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end")
    assert status["phase"] == "Succeeded", status
    server_log = "".join(
        cluster.runner.logs(cluster.ns, p["metadata"]["name"], "server") for p in cluster.pods("open", "server")
    )
    assert "TLS and SuperNode authentication" in server_log and "registered 2 SuperNode public key" in server_log

    # No key in the job, its events, or any log of the job's pods or of the operator.
    shown = cluster.kubectl("get", "ftj", "open", "-o", "yaml") + cluster.kubectl("get", "events", "-o", "yaml")
    logs = "".join(path.read_text(errors="replace") for path in cluster.runner.log_dir.glob("*.log"))
    for secret in secrets.values():
        for key, value in secret["data"].items():
            material = base64.b64decode(value).decode()
            body = "".join(material.splitlines()[1:3])  # the key's own characters, not its PEM header
            assert body not in shown and body not in logs.replace("\n", ""), key
    assert "PRIVATE KEY" not in shown + logs

    cluster.kubectl("delete", "ftj", "open", "--wait=true", "--timeout=60s", timeout=90)
    wait_for(lambda: not any(cluster.children("open").values()), GONE, "every object, the Secrets too, gone")


SCALED_ROUNDS = 12
"""Enough rounds for a client added after round 1 to join a later one: its pod starts, the
kubelet brings its public key into the server's mounted Secret (5 s here), the server registers
it (at its next look, 5 s), and its SuperNode, refused until then, starts again (every 3 s)."""


def test_a_scale_up_registers_the_new_clients_key_and_it_trains(cluster: Cluster) -> None:
    """A running secured job scaled from 2 to 3 clients as a user does it: the operator adds
    client 2's keys to both Secrets, the kubelet brings the new public key into the running
    server's mounted Secret, the server registers it (no restart), client 2's SuperNode joins
    with its own key, replies in a later round, and the job Succeeds."""
    cluster.apply_documents("job", [job("grower", rounds=SCALED_ROUNDS)])
    before = cluster.wait_status(
        "grower",
        lambda s: s.get("phase") == "Running" and s.get("currentRound", 0) >= 1 and s.get("clients") == "2/2",
        RUN,
        "round 1 with 2 clients",
    )
    (server,) = cluster.pods("grower", "server")
    cluster.kubectl("scale", "ftj", "grower", "--replicas=3")

    wait_for(
        lambda: "registered 1 SuperNode public key(s) (3 in all)" in _log(cluster, server),
        RUN,
        "the server registering client 2's key",
    )
    status = cluster.wait_status("grower", lambda s: s.get("phase") in ("Succeeded", "Failed"), 3 * RUN, "the end")
    assert status["phase"] == "Succeeded", status
    document = cluster.server_document("grower")
    assert document is not None
    replies = {r["round"]: r["replies"] for r in document["history"]}
    assert all(replies[r] == 2 for r in range(1, before["currentRound"] + 1)), replies
    assert 3 in replies.values(), f"client 2 never replied: replies per round {replies}"

    # The same server container all along: the key came through its mounted Secret, not a restart.
    (after,) = cluster.pods("grower", "server")
    assert after["metadata"]["uid"] == server["metadata"]["uid"] and cluster.restarts(after) == 0, after["status"]
    log = _log(cluster, server)
    assert "registered 2 SuperNode public key(s) (2 in all)" in log, log
    added = cluster.runner.logs(cluster.ns, "grower-clients-2", "client")
    assert "client 2 was added by a scale up" in added and "client-2.key" in added, added
    assert "SuperNode ID: " in added, added


def _log(cluster: Cluster, server: dict[str, Any]) -> str:
    return cluster.runner.logs(cluster.ns, server["metadata"]["name"], "server")
