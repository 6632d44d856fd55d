"""A job's federation as containers: `kubeflower render` of a job, its server pod and client pods
started on one network (tests.images.containers), and its server's status document."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeflower.core import keys
from kubeflower.core.environment import server_names
from kubeflower.core.validation import load_job
from kubeflower_operator import builders
from testbed.containers.pods import PodNetwork, Started, pods_of

Obj = dict[str, Any]
KUBEFLOWER = str(Path(sys.executable).parent / "kubeflower")
# The status port is read from the host: never through a proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def render(job: Path, namespace: str = "default") -> list[Obj]:
    """What the operator would create for the job: the real CLI's `kubeflower render`."""
    out = subprocess.run(
        [KUBEFLOWER, "render", str(job), "--namespace", namespace], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def key_secrets(job: Path, namespace: str = "default") -> list[Obj]:
    """The job's two Secrets, with fresh keys, as the operator makes them (`kubeflower_operator.jobkeys`):
    not part of `kubeflower render`, which never prints keys."""
    model = load_job(job)
    model.metadata.namespace = namespace
    pairs = {ordinal: keys.client_key() for ordinal in range(model.spec.clients.replicas)}
    return builders.key_secrets(model, keys.server_tls(server_names(model)), pairs)


def one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in the rendered job, got {len(found)}"
    return found[0]


@dataclass
class Federation:
    network: PodNetwork
    server: Started
    clients: list[Started]
    status_port: int

    @classmethod
    def start(cls, network: PodNetwork, objects: list[Obj], secrets: Sequence[Obj] = ()) -> Federation:
        """The server pod behind its Service, then every client pod of the StatefulSet, with the
        job's `secrets` (`key_secrets`) for their key volumes."""
        server_pod = pods_of(one(objects, "Deployment"))[0]
        ports = {p["name"]: p["containerPort"] for p in server_pod["spec"]["containers"][0]["ports"]}
        server = network.start(server_pod, services=[one(objects, "Service")], secret_objects=secrets)
        clients = [network.start(pod, secret_objects=secrets) for pod in pods_of(one(objects, "StatefulSet"))]
        return cls(network, server, clients, ports["status"])

    @property
    def pods(self) -> list[Started]:
        return [self.server, *self.clients]

    def status(self) -> Obj | None:
        """The server's status document, or None while it does not answer."""
        try:
            with _DIRECT.open(f"http://{self.server.address}:{self.status_port}/status", timeout=5) as response:
                return json.load(response)  # type: ignore[no-any-return]
        except OSError:
            return None

    def wait_finished(self, timeout: float) -> Obj:
        """The status document once the run has finished; on a timeout, a failure with every log."""
        deadline = time.monotonic() + timeout
        while (status := self.status()) is None or status["phase"] not in ("Succeeded", "Failed"):
            if time.monotonic() > deadline:
                raise AssertionError(f"not finished after {timeout} s: {status}\n{self.logs()}")
            time.sleep(0.5)
        return status

    def logs(self) -> str:
        return "\n".join(f"--- {s.pod['metadata']['name']}\n{self.network.logs(s)[-4000:]}" for s in self.pods)
