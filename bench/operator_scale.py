"""How the operator copes with many jobs at once, against the Kubernetes API test server.

    .venv/bin/python -m bench.operator_scale [--jobs 100] [--jobs 1000]   (from the repository root)

Creates N jobs at once and prints:
- seconds until every job has its server children (Deployment, Service, NetworkPolicy) and a phase;
- seconds until every job has its clients, once the benchmark marks every server ready;
- API requests the operator made per job to get there (the test server logs HTTP requests only;
  the benchmark's own writes go straight to its store and are not counted);
- status patches during a quiet period after that (target: none: nothing changed);
- the operator process's peak memory (VmHWM).
Targets on a 2-core machine: 100 jobs within 10 s, at most 10 requests per job, no idle status
patches, at most 150 MB. The operator runs as its own process (`kopf run`), as in a cluster.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.jobs import job
from testbed.kubeserver import KubeServer

ROOT = Path(__file__).resolve().parents[1]

NAMESPACE = "bench"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _operator_requests(kube: KubeServer) -> int:
    """Requests other than the long-lived watches (one per resource kind, not per job)."""
    return sum(1 for r in kube.requests.snapshot() if not r.is_watch)


def _wait(what: str, probe, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)  # listing a thousand objects is not free for the test server
    return time.monotonic() - start


def run(jobs: int, interval: float) -> None:
    with KubeServer() as kube, tempfile.TemporaryFile() as log:
        kube.kubectl("apply", "-f", str(ROOT / "crds"), "--validate=false")
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "KUBEFLOWER_RECONCILE_INTERVAL": str(interval),
            "KUBEFLOWER_STATUS_URL": "http://127.0.0.1:9/{namespace}/{name}/status",
        }
        operator = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("kopf")),
                "run",
                "--standalone",
                "--all-namespaces",
                "--quiet",
                "-m",
                "kubeflower_operator.handlers",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait(
                "the operator to start watching",
                lambda: any(r.is_watch and "federatedtrainingjobs" in r.path for r in kube.requests),
                60,
            )
            time.sleep(1)
            before = _operator_requests(kube)
            names = [f"job-{i:04d}" for i in range(jobs)]
            for name in names:
                kube.create(job(name, namespace=NAMESPACE))
            created = time.monotonic()

            def servers_done() -> bool:
                deployments = {d["metadata"]["name"] for d in kube.list("apps/v1", "deployments", NAMESPACE)}
                phased = [
                    j
                    for j in kube.list("kubeflower.io/v1alpha1", "federatedtrainingjobs", NAMESPACE)
                    if (j.get("status") or {}).get("phase")
                ]
                return len(deployments) == jobs and len(phased) == jobs

            _wait("server children and a phase", servers_done, 600)
            t_servers = time.monotonic() - created
            requests_servers = _operator_requests(kube) - before

            for name in names:
                kube.patch_status(
                    "apps/v1", "deployments", NAMESPACE, f"{name}-server", {"replicas": 1, "readyReplicas": 1}
                )
            ready_at = time.monotonic()
            _wait("client StatefulSets", lambda: len(kube.list("apps/v1", "statefulsets", NAMESPACE)) == jobs, 600)
            t_clients = time.monotonic() - ready_at
            requests_all = _operator_requests(kube) - before

            # Let every status change the ready servers caused land, then watch a quiet period.
            time.sleep(max(3 * interval, 2))
            quiet_from = len(kube.requests.snapshot())
            time.sleep(max(5 * interval, 5))
            idle_patches = sum(
                1 for r in kube.requests.snapshot()[quiet_from:] if r.method == "PATCH" and r.path.endswith("/status")
            )
            peak = _peak_rss_mb(operator.pid)
        finally:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()

    print(f"jobs: {jobs} (reconcile interval {interval}s)")
    print(f"seconds to server children + phase for every job: {t_servers:.2f}")
    print(f"seconds to client StatefulSets after the servers became ready: {t_clients:.2f}")
    print(f"operator API requests per job to children + first phase: {requests_servers / jobs:.2f}")
    print(f"operator API requests per job including the clients: {requests_all / jobs:.2f}")
    print(f"status patches in a quiet period: {idle_patches}")
    print(f"operator peak memory: {peak:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, action="append", help="jobs created at once (repeatable); default 100")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="the operator's reconcile interval (default 5, as deployed)"
    )
    args = parser.parse_args()
    for jobs in args.jobs or [100]:
        run(jobs, args.interval)


if __name__ == "__main__":
    main()
