"""
:class:`KubeServer`: the API test server in a background thread, for plain sync tests.

The server runs its own event loop in its own thread, so that it serves both the
operator under test (kopf runs in yet another thread, see ``kopf.testing.KopfRunner``)
and real ``kubectl`` processes while the test body blocks. The direct methods run
their work in the server's loop, through the same store as HTTP requests, so they
emit the same watch events; they are not HTTP requests and are not in ``requests``.
"""

import asyncio
import copy
import json
import logging
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp.web

from . import errors, patching, selectors
from .requestlog import RequestLog
from .resources import ResourceSpec
from .server import KubeEmulator
from .store import Store

logger = logging.getLogger(__name__)
T = TypeVar("T")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl run; unlike its base class, it shows kubectl's output in tracebacks."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


class KubeServer:
    """
    An in-process Kubernetes API server for tests: ``with KubeServer() as kube: ...``.

    It binds a free port on ``host`` (127.0.0.1 unless told; e.g. the address of a bridge
    when processes in other network namespaces must reach it), writes a kubeconfig for it
    into a temporary directory, and removes everything on exit. If the server itself failed
    on some request (an answer 500, a bug here), exiting raises so that it is not missed.
    """

    def __init__(self, *, kubectl_binary: str = "kubectl", host: str = "127.0.0.1") -> None:
        self.requests = RequestLog()  # every HTTP request received, thread-safe
        self._kubectl_binary = kubectl_binary
        self._workdir: pathlib.Path | None = None  # the kubeconfig and kubectl's cache
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._emulator: KubeEmulator | None = None  # set while serving
        self._runner: aiohttp.web.ServerRunner | None = None
        self._port = 0
        self._host = host

    @property
    def admission(self) -> list[Any]:
        """Admission rules of this server (a list to append to): each takes the resource as
        ``plural.group`` and the object being created or replaced, and returns why it is refused
        (answered 422 Invalid with that text) or None."""
        if self._emulator is None:
            raise RuntimeError("the server is not running")
        return self._emulator.admission

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self._host}:{self._port}"

    @property
    def kubeconfig(self) -> str:
        """The path of a kubeconfig file whose current context points to this server (namespace default)."""
        if self._workdir is None:
            raise RuntimeError("the server is not running: use it as `with KubeServer() as kube:`")
        return str(self._workdir / "kubeconfig")

    def __enter__(self) -> "KubeServer":
        if self._loop is not None:
            raise RuntimeError("a KubeServer can be started only once")
        self._workdir = pathlib.Path(tempfile.mkdtemp(prefix="kubeserver-"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubeserver", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        except BaseException:
            self._shutdown()
            raise
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeserver", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeserver", "user": {}}],
            "contexts": [
                {
                    "name": "kubeserver",
                    "context": {"cluster": "kubeserver", "user": "kubeserver", "namespace": "default"},
                }
            ],
            "current-context": "kubeserver",
        }
        pathlib.Path(self.kubeconfig).write_text(json.dumps(config, indent=2))  # JSON is YAML
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: types.TracebackType | None
    ) -> None:
        failures = self._emulator.failures if self._emulator is not None else []
        self._shutdown()
        if failures and exc is None:
            raise RuntimeError(f"The API test server failed on {len(failures)} request(s): {failures!r}")

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        emulator = KubeEmulator(server_address=f"{self._host}:{self._port}", request_log=self.requests)
        await emulator.__aenter__()
        # handler_cancellation: a watch whose client disconnected ends at once instead of at its timeout.
        self._runner = aiohttp.web.ServerRunner(
            aiohttp.web.Server(emulator, handler_cancellation=True), shutdown_timeout=1.0
        )
        await self._runner.setup()
        await aiohttp.web.SockSite(self._runner, sock).start()
        self._emulator = emulator

    async def _stop(self) -> None:
        if self._emulator is not None:
            self._emulator.events.close()  # end the watches now rather than at their timeouts
        if self._runner is not None:
            await self._runner.cleanup()
        if self._emulator is not None:
            await self._emulator.__aexit__(None, None, None)
        self._emulator = None

    def _shutdown(self) -> None:
        assert self._loop is not None and self._thread is not None and self._workdir is not None
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            if not self._loop.is_running():
                self._loop.close()
            shutil.rmtree(self._workdir, ignore_errors=True)

    # kubectl.

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run the real kubectl against this server, with its own discovery cache directory.

        On timeout, kubectl is killed and what it printed so far is returned (useful for
        ``get -w``); with ``check=True`` (the default) a non-zero exit or a timeout raises
        :class:`KubectlError`, which shows stderr.
        """
        command = [
            self._kubectl_binary,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={pathlib.Path(self.kubeconfig).parent / 'kubectl-cache'}",
            *args,
        ]
        with subprocess.Popen(
            command,
            text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                stderr += f"\n[kubeserver: kubectl timed out after {timeout}s and was killed]"
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, stdout, stderr)
        return result

    # Direct access to the objects, as a controller or a kubelet of the test would do it.

    def get(self, group_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist. ``group_version`` is e.g. ``"v1"`` or ``"apps/v1"``."""
        return self._in_loop(lambda store, spec: store.find(spec, namespace, name), group_version, plural)

    def list(
        self, group_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The objects in a namespace (all namespaces if None), optionally filtered by a label selector."""
        selector = selectors.Selector.parse(namespace=namespace, labels=label_selector or "")
        return self._in_loop(lambda store, spec: store.select(spec, selector), group_version, plural)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object (namespaced ones in ``metadata.namespace``, or ``default``); the stored object."""
        namespace = (obj.get("metadata") or {}).get("namespace") or "default"
        return self._in_loop(
            lambda store, spec: store.create(spec, namespace if spec.namespaced else None, obj),
            obj.get("apiVersion", ""),
            kind=obj.get("kind", ""),
        )

    def patch_status(
        self, group_version: str, plural: str, namespace: str | None, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``.status`` through the status subresource, as a controller or a kubelet would."""

        def patch(store: Store, spec: ResourceSpec) -> dict[str, Any]:
            return store.update(
                spec,
                namespace,
                name,
                "status" if spec.status else None,
                lambda obj: patching.merge_patch(obj, {"status": status_patch}),
            )

        return self._in_loop(patch, group_version, plural)

    def patch(
        self, group_version: str, plural: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the object itself (not its status), as a controller changing metadata or spec would."""

        def change(store: Store, spec: ResourceSpec) -> dict[str, Any]:
            return store.update(spec, namespace, name, None, lambda obj: patching.merge_patch(obj, patch))

        return self._in_loop(change, group_version, plural)

    def delete(self, group_version: str, plural: str, namespace: str | None, name: str) -> None:
        """Delete as ``kubectl delete`` does: finalizers are honoured, dependents are garbage-collected."""
        self._in_loop(lambda store, spec: store.delete(spec, namespace, name, {}), group_version, plural)

    def _in_loop(
        self, fn: Callable[[Store, ResourceSpec], T], group_version: str, plural: str = "", *, kind: str = ""
    ) -> T:
        """Run ``fn`` in the server's loop thread; kmock.KubernetesError on API errors (e.g. 404, 409)."""
        emulator, loop = self._emulator, self._loop
        if emulator is None or loop is None:
            raise RuntimeError("the server is not running: use it as `with KubeServer() as kube:`")

        async def run() -> T:
            group, _, version = group_version.rpartition("/")
            spec = (
                emulator.registry.find_kind(group_version, kind)
                if kind
                else emulator.registry.get(group, version, plural)
            )
            if spec is None:
                raise errors.unknown_resource(f"{group_version} {kind or plural}")
            return copy.deepcopy(fn(emulator.store, spec))  # the caller may mutate it; the store must not change

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)
