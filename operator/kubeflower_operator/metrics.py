"""The operator's own Prometheus metrics, served as text on its own port (`/metrics`, and `/healthz`).

What an on-call engineer asks of an operator: how many jobs are in each phase, how often and how
long it reconciles, whether it can read the job servers' status, whether the API refuses its
writes. Series are bounded: per job only the counters of that job (removed when the job is
deleted), never a label per round, client or pod. Written by hand (the text format is a few lines)
so that the operator image needs no new dependency.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubeflower.core.server_status import Phase

PHASES = tuple(p.value for p in Phase)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the reconcile duration histogram; a reconcile reads no API object."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JobKey = tuple[str, str]


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """All the operator's series, updated from the handlers' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[JobKey, str] = {}
        self._reconciles: dict[tuple[JobKey, str], int] = defaultdict(int)
        self._reconcile_failures: dict[JobKey, int] = defaultdict(int)
        self._polls: dict[JobKey, int] = defaultdict(int)
        self._poll_failures: dict[JobKey, int] = defaultdict(int)
        self._api_errors: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets = [0] * len(BUCKETS)
        self._duration_sum = 0.0
        self._duration_count = 0

    def job_seen(self, job: JobKey, phase: str | None) -> None:
        """A job as the API has it now; no phase yet (not reconciled) counts as Pending."""
        with self._lock:
            self._phases[job] = phase if phase in PHASES else Phase.PENDING.value

    def job_gone(self, job: JobKey) -> None:
        """A deleted job takes its series with it."""
        with self._lock:
            self._phases.pop(job, None)
            for key in [k for k in self._reconciles if k[0] == job]:
                del self._reconciles[key]
            for series in (self._reconcile_failures, self._polls, self._poll_failures):
                series.pop(job, None)

    def reconciled(self, job: JobKey, trigger: str, seconds: float, failed: bool) -> None:
        with self._lock:
            self._reconciles[(job, trigger)] += 1
            if failed:
                self._reconcile_failures[job] += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            self._duration_sum += seconds
            self._duration_count += 1

    def polled(self, job: JobKey, failed: bool) -> None:
        with self._lock:
            self._polls[job] += 1
            if failed:
                self._poll_failures[job] += 1

    def api_error(self, verb: str, kind: str, code: int | None) -> None:
        with self._lock:
            self._api_errors[(verb, kind, str(code or 0))] += 1

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            lines: list[str] = []

            def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
                lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
                lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

            counts = {p: 0 for p in PHASES}
            for phase in self._phases.values():
                counts[phase] += 1
            family(
                "kubeflower_jobs",
                "gauge",
                "FederatedTrainingJobs by phase.",
                ((_labels(phase=p), n) for p, n in counts.items()),
            )
            family(
                "kubeflower_reconciles_total",
                "counter",
                "Reconciles of a job, by what started them (create, update, resume, timer).",
                (
                    (_labels(namespace=ns, job=name, trigger=t), n)
                    for ((ns, name), t), n in sorted(self._reconciles.items())
                ),
            )
            family(
                "kubeflower_reconcile_failures_total",
                "counter",
                "Reconciles of a job that raised (kopf retries them).",
                ((_labels(namespace=ns, job=name), n) for (ns, name), n in sorted(self._reconcile_failures.items())),
            )
            # A histogram's samples are name_bucket{le=...}, name_sum, name_count: the suffix goes before the labels.
            buckets = [("_bucket" + _labels(le=_number(b)), n) for b, n in zip(BUCKETS, self._buckets, strict=True)]
            family(
                "kubeflower_reconcile_duration_seconds",
                "histogram",
                "Time of one reconcile (plan and writes).",
                [
                    *buckets,
                    ("_bucket" + _labels(le="+Inf"), self._duration_count),
                    ("_sum", self._duration_sum),
                    ("_count", self._duration_count),
                ],
            )
            family(
                "kubeflower_status_polls_total",
                "counter",
                "Reads of a job server's status document.",
                ((_labels(namespace=ns, job=name), n) for (ns, name), n in sorted(self._polls.items())),
            )
            family(
                "kubeflower_status_poll_failures_total",
                "counter",
                "Reads of a job server's status document that failed (unreachable, bad answer).",
                ((_labels(namespace=ns, job=name), n) for (ns, name), n in sorted(self._poll_failures.items())),
            )
            family(
                "kubeflower_api_errors_total",
                "counter",
                "Error answers of the Kubernetes API to the operator's writes to children and jobs, by HTTP code.",
                ((_labels(verb=v, kind=k, code=c), n) for (v, k, c), n in sorted(self._api_errors.items())),
            )
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:  # http.server's name
        path = self.path.split("?")[0]
        if path == "/healthz":  # the pod's probes: alive and serving, leader or standby
            body, content_type = b"ok\n", "text/plain"
        elif path == "/metrics":
            body, content_type = self.metrics.render().encode(), CONTENT_TYPE
        else:
            self.send_error(404, "only /metrics and /healthz are served here")
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # a scrape every 15 s is not news


def serve(metrics: Metrics, port: int, host: str = "") -> ThreadingHTTPServer:
    """Serve `/metrics` from a daemon thread until `shutdown()`; a port that is taken fails here,
    at start-up, with the port in the error."""
    handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise RuntimeError(f"cannot serve metrics on port {port} ({exc}); set KUBEFLOWER_METRICS_PORT") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
