"""The workload image: a federation of one server and two client containers, started exactly as
`kubeflower render` describes the pods, reaches Succeeded, and every container stops by itself on
SIGTERM within its grace period."""

from __future__ import annotations

import re
import time

import pytest

from testbed.containers.engine import REPO, Docker
from testbed.containers.federation import Federation, key_secrets, one, render
from testbed.containers.pods import PodNetwork, Started
from testbed.podrunner.images import IMAGES

pytestmark = pytest.mark.images
DIGITS = REPO / "examples" / "digits-fedavg.yaml"


def process_status(docker: Docker, started: Started) -> dict[str, str]:
    """/proc/1/status of the container: what its main process really runs as."""
    text = docker("exec", started.container, "cat", "/proc/1/status")
    return dict(re.findall(r"^(\w+):\s*(.*)$", text, re.M))


def assert_locked_down(docker: Docker, started: Started) -> None:
    """The image's non-root user, no capabilities, no new privileges, a read-only root."""
    status = process_status(docker, started)
    assert status["Uid"].split() == ["10001"] * 4, status["Uid"]
    assert status["CapEff"] == status["CapPrm"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    write = docker("exec", started.container, "sh", "-c", "touch /opt/probe 2>&1 || true")
    assert "Read-only file system" in write
    # The emptyDir volumes are writable by the pod's user (tmpfs owned by its fsGroup).
    docker("exec", started.container, "sh", "-c", "touch /tmp/probe /var/lib/kubeflower/flwr/probe")


def test_the_pod_runners_image_table_is_the_images_own_metadata(
    docker: Docker, workload_image: str, operator_image: str
) -> None:
    """The e2e suite runs pods with the table in tests/podrunner/images.py: it must be these images.

    PATH differs by design (the table's points at the test machine's interpreter), and the images
    carry their base image's own variables (the official one sets PYTHON_VERSION and GPG_KEY)."""
    for tag in (workload_image, operator_image):
        real, table = docker.image_metadata(tag), IMAGES[tag]
        assert (real.entrypoint, real.cmd, real.user, real.group, real.workdir) == (
            table.entrypoint,
            table.cmd,
            table.user,
            table.group,
            table.workdir,
        ), tag
        base = docker.image_metadata(docker.inspect("image", tag)["Config"]["Labels"]["io.kubeflower.base-image"])
        own = {k: v for k, v in real.env.items() if k != "PATH" and base.env.get(k) != v}
        assert own == {k: v for k, v in table.env.items() if k != "PATH" and base.env.get(k) != v}, tag
        assert {k: real.env.get(k) for k in table.env if k != "PATH"} == {
            k: v for k, v in table.env.items() if k != "PATH"
        }, tag


def test_a_federation_of_containers_succeeds_and_stops_on_sigterm(docker: Docker, workload_image: str) -> None:
    objects = render(DIGITS)
    for kind in ("Deployment", "StatefulSet"):
        assert one(objects, kind)["spec"]["template"]["spec"]["containers"][0]["image"] == workload_image
    rounds = 3
    with PodNetwork(docker) as network:
        began = time.monotonic()
        federation = Federation.start(network, objects, key_secrets(DIGITS))
        for started in federation.pods:
            assert_locked_down(docker, started)

        status = federation.wait_finished(420)
        seconds = time.monotonic() - began
        assert status["phase"] == "Succeeded", f"{status}\n{federation.logs()}"
        assert status["currentRound"] == status["totalRounds"] == rounds
        accuracy = status["metrics"]["accuracy"]
        assert accuracy >= 0.9, federation.logs()
        # Secured by default: the image's nginx in front of a loopback SuperLink, TLS, the clients' keys registered.
        server_log = network.logs(federation.server)
        assert "behind the front proxy" in server_log and "TLS and SuperNode authentication" in server_log, server_log
        assert "registered 2 SuperNode public key" in server_log, server_log
        print(f"\ncontainers: {rounds}/{rounds} rounds, accuracy {accuracy:.4f}, {seconds:.1f} s from the first start")

        # SIGTERM, with the pod's grace period before a SIGKILL (exit 137): each stops by itself.
        grace = one(objects, "StatefulSet")["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        for started in [*federation.clients, federation.server]:
            code, took = network.stop(started)
            print(f"SIGTERM {started.pod['metadata']['name']}: exit {code} after {took:.1f} s (grace {grace} s)")
            assert code == 0, (
                f"{started.pod['metadata']['name']} exited {code} on SIGTERM\n{network.logs(started)[-3000:]}"
            )
