"""The server entry point's own HTTP endpoints: GET /status, /metrics and /healthz.

The standard library's threaded HTTP server, in a daemon thread: a handful of small GETs a few
seconds apart (the operator, a Prometheus scrape, the kubelet's probes) need nothing more, and the
entry point stays small next to the SuperLink.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubeflower.core import contract
from kubeflower.core.server_status import Phase, ServerStatus

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_text(status: ServerStatus, job: str) -> str:
    """The status as Prometheus gauges, labelled with the job; loss and accuracy once known."""
    label = f'job="{_escape(job)}"'
    gauges: list[tuple[str, str, list[tuple[str, float]]]] = [
        ("kubeflower_round", "Last finished round.", [(label, status.current_round)]),
        ("kubeflower_rounds", "Rounds the run was configured with.", [(label, status.total_rounds)]),
        ("kubeflower_clients_connected", "SuperNodes connected to the SuperLink.", [(label, status.clients.connected)]),
        ("kubeflower_clients_expected", "Clients a round waits for.", [(label, status.clients.expected)]),
        (
            "kubeflower_run_phase",
            "1 for the run's current phase, 0 for the others.",
            [(f'{label},phase="{p.value}"', float(status.phase == p)) for p in Phase],
        ),
    ]
    for key in ("loss", "accuracy"):
        if key in status.metrics:
            gauges.append(
                (f"kubeflower_{key}", f"Aggregated evaluation {key} of the last round.", [(label, status.metrics[key])])
            )
    every = [
        (f'{label},kind="{kind}",name="{_escape(name)}"', value)
        for kind, metrics in (("evaluate", status.metrics), ("server", status.server_metrics))
        for name, value in metrics.items()
    ]
    if every:  # a user's app's own names (bounded by the status document)
        gauges.append(("kubeflower_metric", "Every metric of the last round, by kind and name.", every))
    lines = []
    for name, help_text, samples in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{{{labels}}} {value:g}" for labels, value in samples]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Stop:
    """`POST /stop`: the operator's word that the job failed (its deadline, its backoffLimit). Only
    a request carrying the job's UID (contract.STOP_TOKEN_HEADER) is obeyed."""

    token: str
    stop: Callable[[], None]


def serve(
    port: int,
    status: Callable[[], ServerStatus],
    healthy: Callable[[], bool],
    job: str,
    host: str = "0.0.0.0",
    stop: Stop | None = None,
) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; `shutdown()` the returned server to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            given = self.headers.get(contract.STOP_TOKEN_HEADER, "")
            if self.path.split("?", 1)[0] != "/stop" or stop is None:
                self._reply(404, "text/plain", "not found\n")
            elif not hmac.compare_digest(given.encode(), stop.token.encode()):
                self._reply(403, "text/plain", "forbidden\n")
            else:
                stop.stop()
                self._reply(202, "text/plain", "stopping\n")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/status":
                self._reply(200, "application/json", status().to_json())
            elif path == "/metrics":
                self._reply(200, PROMETHEUS, prometheus_text(status(), job))
            elif path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, "text/plain", "ok\n" if ok else "not ready\n")
            else:
                self._reply(404, "text/plain", "not found: try /status, /metrics or /healthz\n")

        def _reply(self, code: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
