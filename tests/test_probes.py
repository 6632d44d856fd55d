"""The pod runner's gRPC probe against Flower's own gRPC health server (the SuperNode's)."""

from __future__ import annotations

from flwr.supercore.grpc_health import run_health_server_grpc_no_tls

from kubeflower_workload import processes
from testbed.podrunner import probes


def test_a_grpc_probe_passes_on_a_serving_health_server_and_fails_without_one() -> None:
    (port,) = processes.free_ports(1)
    probe = {"grpc": {"port": port}, "timeoutSeconds": 2}
    server = run_health_server_grpc_no_tls(f"127.0.0.1:{port}")
    try:
        ok, message = probes.check(probe, {}, "127.0.0.1")
        assert ok and message == "service status SERVING", message
    finally:
        server.stop(None).wait()
    ok, message = probes.check(probe, {}, "127.0.0.1")
    assert not ok and "UNAVAILABLE" in message, message
