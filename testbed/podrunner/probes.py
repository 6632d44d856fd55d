"""Container probes as the kubelet runs them: from the node (the root namespace) to the pod's address.

Each probe keeps Kubernetes' timing and thresholds (initialDelaySeconds, periodSeconds,
timeoutSeconds, successThreshold, failureThreshold, with their defaults). `httpGet` succeeds on
an answer 200-399, `tcpSocket` on a connection, `grpc` on a grpc.health.v1 SERVING answer; `exec`
probes are not modelled.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from testbed.podrunner.podspec import Unsupported, container_port


def check(probe: dict[str, Any], pod: dict[str, Any], address: str) -> tuple[bool, str]:
    """One probe attempt: (success, what happened)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        get = probe["httpGet"]
        if get.get("scheme", "HTTP").upper() != "HTTP":
            raise Unsupported("httpGet probes over HTTPS")
        port = container_port(pod, get["port"])
        url = f"http://{get.get('host') or address}:{port}{get.get('path', '/')}"
        request = urllib.request.Request(url, headers={h["name"]: h["value"] for h in get.get("httpHeaders") or []})
        request.add_header("User-Agent", "kube-probe/1.32")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return 200 <= response.status < 400, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return 200 <= exc.code < 400, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return False, f"Get {url}: {exc}"
    if "tcpSocket" in probe:
        port = container_port(pod, probe["tcpSocket"]["port"])
        try:
            socket.create_connection((probe["tcpSocket"].get("host") or address, port), timeout=timeout).close()
            return True, "connected"
        except OSError as exc:
            return False, f"dial tcp {address}:{port}: {exc}"
    if "grpc" in probe:
        return _grpc(probe["grpc"], address, timeout)
    raise Unsupported(f"probe handlers {sorted(k for k in probe if not k.endswith(('Seconds', 'Threshold')))}")


def _grpc(probe: dict[str, Any], address: str, timeout: float) -> tuple[bool, str]:
    """The kubelet's gRPC probe: grpc.health.v1 Health/Check on the port, SERVING is success."""
    import grpc
    from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
    from grpc_health.v1.health_pb2_grpc import HealthStub

    target = f"{address}:{int(probe['port'])}"
    with grpc.insecure_channel(target) as channel:
        try:
            answer = HealthStub(channel).Check(HealthCheckRequest(service=probe.get("service", "")), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"rpc error: code = {exc.code().name} desc = {exc.details()}"
    serving = answer.status == HealthCheckResponse.SERVING
    return serving, f"service status {HealthCheckResponse.ServingStatus.Name(answer.status)}"


@dataclass
class Prober:
    """One probe of one running container: when it is due, and its verdict so far."""

    kind: str  # readiness | liveness | startup
    probe: dict[str, Any]
    started: float
    successes: int = 0
    failures: int = 0
    next_at: float = field(init=False)
    in_flight: bool = False
    last: str = ""
    passed: bool = False
    """readiness: ready; startup: started. Flips only when a threshold is crossed."""
    failed: bool = False
    """liveness and startup: the container must be restarted."""

    def __post_init__(self) -> None:
        self.next_at = self.started + float(self.probe.get("initialDelaySeconds", 0))

    def due(self, now: float) -> bool:
        return (
            not self.in_flight
            and not self.failed
            and now >= self.next_at
            and not (self.kind == "startup" and self.passed)
        )

    def record(self, ok: bool, message: str, now: float) -> None:
        self.in_flight = False
        self.last = message
        self.next_at = now + float(self.probe.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            threshold = int(self.probe.get("successThreshold", 1))
            if self.successes >= threshold:
                self.passed = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                if self.kind == "readiness":
                    self.passed = False
                else:
                    self.failed = True
