""":class:`PodRunner`: a one-node "cluster" for the API test server, running its pods as local processes."""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from testbed.podrunner.kubelet import Kubelet, claim_folder
from testbed.podrunner.labels import matches
from testbed.podrunner.netns import Network
from testbed.podrunner.pods import Controllers
from testbed.podrunner.services import ServiceNetwork

Obj = dict[str, Any]
log = logging.getLogger(__name__)
WATCHED = (
    ("deployments", "apps/v1"),
    ("replicasets", "apps/v1"),
    ("statefulsets", "apps/v1"),
    ("pods", "v1"),
    ("services", "v1"),
    ("networkpolicies", "networking.k8s.io/v1"),
    ("namespaces", "v1"),
)


class PodRunner:
    """
    The controllers, kube-proxy and kubelet of one node, for a :class:`testbed.kubeserver.KubeServer`.

    ``with Network() as net, KubeServer(host=net.gateway) as kube, PodRunner(kube, net) as runner:``
    -- from then on, Deployments and StatefulSets in the test server get Pods, the Pods run, and
    every status is reported back, until the ``with`` ends: then every process is stopped
    (SIGTERM, SIGKILL 2 s later) and every namespace, link and directory of the run is removed,
    whether the test passed or not. One thread does all the work, polling the server every
    ``interval`` seconds; problems that a test must not pass over (a spec this runner does not
    model, a failure of its own) are collected in ``errors``.
    """

    def __init__(
        self, kube: Any, network: Network, *, log_dir: Path | None = None, backoff: float = 10.0, interval: float = 0.2
    ) -> None:
        self.kube, self.network = kube, network
        self.interval = interval
        self.backoff = backoff
        self.errors: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"kfpr-{network.run_id}-"))
        self.log_dir = log_dir or self.workdir / "logs"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="podrunner", daemon=True)
        self.kubelet: Kubelet | None = None
        self.services: ServiceNetwork | None = None
        self._closed = False

    def __enter__(self) -> PodRunner:
        self.network.set_workdir(self.workdir)
        atexit.register(self.close)
        self._thread.start()
        self._started.wait(60)
        if not self._thread.is_alive():
            self.close()
            raise RuntimeError(f"the pod runner did not start: {self.errors}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(120)
        atexit.unregister(self.close)
        for path in self.workdir.iterdir() if self.workdir.exists() else []:
            if path != self.log_dir:
                shutil.rmtree(path, ignore_errors=True)
        if not self.log_dir.is_relative_to(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # The loop: everything happens in this one thread. The containers' shims die with the thread
    # that started them (PR_SET_PDEATHSIG), so it is also the thread that stops them.

    def _run(self) -> None:
        try:
            self.kubelet = Kubelet(self.kube, self.network, self.workdir, self.log_dir, self._error, self.backoff)
            self.controllers = Controllers(self.kube, self._error)
            self.services = ServiceNetwork(self.kube, self.network)
        except Exception:
            self._error(f"starting: {traceback.format_exc()}")
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                with self._lock:
                    try:
                        self._tick()
                    except Exception:
                        if not self._stop.is_set():
                            self._error(f"sync: {traceback.format_exc()}")
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            with self._lock:
                self.kubelet.close()
                self.services.close()

    def _tick(self) -> None:
        listed = {plural: self.kube.list(gv, plural) for plural, gv in WATCHED}
        assert self.services is not None and self.kubelet is not None
        self.services.sync(listed["services"], listed["pods"], listed["networkpolicies"], listed["namespaces"])
        self.controllers.sync(listed["deployments"], listed["replicasets"], listed["statefulsets"], listed["pods"])
        self.kubelet.sync(listed["pods"], listed["services"])

    def _error(self, message: str) -> None:
        if message not in self.errors:  # a pod's trouble recurs at every sync: once is enough
            log.error("podrunner: %s", message)
            self.errors.append(message)

    # What a test may ask.

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int | None:
        """The host PID of a running container's main process (PID 1 of its PID namespace)."""
        with self._lock:
            assert self.kubelet is not None
            for sandbox in self.kubelet.sandboxes.values():
                if sandbox.namespace == namespace and sandbox.name == pod and not sandbox.terminating:
                    for name, c in sandbox.containers.items():
                        if (container is None or name == container) and c.running and c.process is not None:
                            return c.process.pid
        return None

    def processes(self, namespace: str | None = None, selector: dict[str, str] | None = None) -> dict[int, str]:
        """Live processes (host PID -> "namespace/pod") in the network namespaces of pods this
        runner ran, optionally of one namespace and matching a label selector: read from /proc,
        not from the runner's own bookkeeping."""
        assert self.kubelet is not None
        return {
            pid: f"{ns}/{name}"
            for pid, (ns, name, labels) in self.kubelet.pod_processes().items()
            if (namespace is None or ns == namespace) and (selector is None or matches(selector, labels))
        }

    def refused(self) -> list[tuple[str, tuple[str, int]]]:
        """(client address, (cluster IP, port)) of every connection a NetworkPolicy refused."""
        return list(self.services.proxy.refused) if self.services else []

    def claim_folder(self, namespace: str, claim: str) -> Path:
        """The folder that stands in for a PersistentVolumeClaim's volume (made by the first pod mounting it)."""
        return claim_folder(self.workdir, namespace, claim)

    def logs(self, namespace: str, pod: str, container: str) -> str:
        path = self.log_dir / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tails(self, lines: int = 40) -> str:
        """The end of every container's log (all restarts), for a failing test's report."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")) if self.log_dir.exists() else []:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def leftovers(self, settle: float = 15.0) -> list[str]:
        """After close: what is still there of this run (processes, namespaces); empty when clean.

        A killed process stays in /proc until the kernel has freed its memory and its parent has
        reaped it, which on a loaded machine can take seconds for a process holding torch: what
        is gone within `settle` seconds was not left behind."""
        deadline = time.monotonic() + settle
        while self.kubelet and self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        found = [f"process {pid} of pod {pod}" for pid, pod in self.processes().items()] if self.kubelet else []
        with contextlib.suppress(Exception):
            found += [f"network namespace {n}" for n in self.network.names()]
        return found
