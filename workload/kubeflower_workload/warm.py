"""Warm ClientApps, the client entry point's side: the shim on PATH, the fork server, its restarts.

`kubeflower-client` calls `WarmClientApps.prepare` with the SuperNode's environment before it
starts anything: a private folder (mode 0700, under TMPDIR or /tmp, an emptyDir in the pod) gets
the `flwr-clientapp` shim and the fork server's socket, and the folder goes first on PATH. The
fork server is started with that same environment (import-time settings such as
OMP_NUM_THREADS and Flower's log level are read where the imports happen), and restarted when it
ends, with a growing pause; meanwhile the shim runs the stock `flwr-clientapp`.

What the fork server pre-imports beyond Flower: `tool.kubeflower.preload` in the app's
pyproject.toml, a list of module names (the built-in app lists its task module, which imports
torch and numpy).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubeflower_workload import clientapp_shim, forkserver, processes

LOG = logging.getLogger("kubeflower-client")
SHIM_SOURCE = Path(clientapp_shim.__file__)
RESTART_PAUSE = (1.0, 60.0)
"""Seconds before a fork server that ended is started again: the first pause, and the most."""
BLAS_THREADS = "OPENBLAS_NUM_THREADS"
TASK_POLL = "5"
"""Seconds between a fork server's asks for ClientApp messages in the SuperExec's role, when not poked.

The client entry point pokes it (SIGUSR1) as soon as the SuperNode logs a message's arrival, which
Flower does after the message's task and objects are stored, so this only bounds how long a missed
poke could delay a message. Flower's SuperExec polls every 1 s (ours every 0.5 s,
`processes.NODE_SUPEREXEC_POLL_INTERVAL`), and each ask costs CPU on both sides: with the model
packed, the fork servers took 0.07 to 0.09 CPU-s per client-round at 2 s, 0.06 at 5 s (the median
of three runs) and 0.05 at 10 s (`bench.client_cost`, 10 clients, rounds of about 4 s)."""
LISTEN_TIMEOUT = 10.0
"""Seconds to wait for a starting fork server's socket (it binds before importing anything heavy)."""


class PreloadError(ValueError):
    """`tool.kubeflower.preload` is not a list of module names."""


def preload_modules(app_dir: Path) -> list[str]:
    """`[tool.kubeflower] preload = [...]` of the app's pyproject.toml; none where it is absent."""
    pyproject = app_dir / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []  # the server reports a broken app; the clients just start cold-imported children
    value = data.get("tool", {}).get("kubeflower", {}).get("preload", [])
    if not (isinstance(value, list) and all(isinstance(m, str) and m.strip() for m in value)):
        raise PreloadError(
            f'{pyproject}: tool.kubeflower.preload must be a list of module names, like ["torch"]; got {value!r}'
        )
    return value


def real_clientapp(path: str) -> str | None:
    """The stock `flwr-clientapp` on `path` (our scripts' folder first, as `processes.child_env` orders it)."""
    return shutil.which(forkserver.CLIENTAPP_COMMAND, path=path)


def write_shim(folder: Path) -> Path:
    """The shim, as an executable `flwr-clientapp` in `folder`, run by this interpreter."""
    shim = folder / forkserver.CLIENTAPP_COMMAND
    shim.write_text(f"#!{sys.executable} -IS\n" + SHIM_SOURCE.read_text())
    shim.chmod(0o700)
    return shim


@dataclass
class WarmClientApps:
    """The fork server of one client, and what the SuperNode's environment needs to reach it."""

    folder: Path
    env: dict[str, str]
    preload: list[str]
    runtime_api_address: str | None = None
    """The SuperNode's Runtime API where the fork server takes the SuperExec's role; None: the shim's way."""
    server: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    pause: float = RESTART_PAUSE[0]
    started: float = 0.0

    @classmethod
    def prepare(
        cls, env: Mapping[str, str], preload: list[str], runtime_api_address: str | None = None
    ) -> WarmClientApps:
        """A private folder with the shim, and `env` with that folder first on PATH."""
        real = real_clientapp(env.get("PATH", os.defpath))
        if real is None:
            raise FileNotFoundError("flwr-clientapp is not on PATH: is flwr installed?")
        folder = Path(tempfile.mkdtemp(prefix="kubeflower-warm-"))  # mode 0700
        if os.statvfs(folder).f_flag & os.ST_NOEXEC:
            shutil.rmtree(folder, ignore_errors=True)
            raise OSError(
                f"{folder.parent} is mounted noexec: the shim cannot run from it (set TMPDIR to an executable folder)"
            )
        write_shim(folder)
        warm_env = {
            **env,
            "PATH": os.pathsep.join([str(folder), env.get("PATH", os.defpath)]),
            clientapp_shim.ENV_SOCKET: str(folder / "forkserver.sock"),
            clientapp_shim.ENV_REAL_CLIENTAPP: real,
        }
        return cls(folder, warm_env, preload, runtime_api_address)

    def command(self) -> list[str]:
        # -P: the working folder stays off sys.path (a checkout's operator/ would shadow the stdlib's)
        options = [arg for module in self.preload for arg in ("--preload", module)]
        if self.runtime_api_address is not None:
            options += ["--runtime-api-address", self.runtime_api_address, "--poll", TASK_POLL]
            if BLAS_THREADS not in self.env:  # ours, for the fork; a ClientApp gets the SuperNode's environment
                options += ["--child-unset", BLAS_THREADS]
        return [
            sys.executable,
            "-P",
            "-m",
            "kubeflower_workload.forkserver",
            self.env[clientapp_shim.ENV_SOCKET],
            *options,
        ]

    def server_env(self) -> dict[str, str]:
        """The SuperNode's environment, with a single-threaded BLAS: numpy's OpenBLAS starts its
        thread pool at import, and the server may fork only with one thread. A value the pod sets wins."""
        return {BLAS_THREADS: "1", **self.env}

    def start(self) -> None:
        """Start the fork server and wait (briefly) for its socket: it listens before its imports,
        and a shim that connects meanwhile waits in the backlog instead of starting cold."""
        socket_path = Path(self.env[clientapp_shim.ENV_SOCKET])
        socket_path.unlink(missing_ok=True)
        self.server = processes.start(self.command(), self.server_env())
        self.started = time.monotonic()
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not socket_path.exists() and self.server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        LOG.info(
            "warm ClientApps: fork server %d started (pre-imports: %s)",
            self.server.pid,
            ", ".join(self.preload) or "Flower only",
        )

    def supervise(self) -> None:
        """Start the fork server again when it has ended, after a pause that doubles while it keeps ending."""
        if self.server is None or self.server.poll() is None:
            return
        now = time.monotonic()
        if self.next_start == 0.0:
            if now - self.started > RESTART_PAUSE[1]:  # it had been serving for a while: not a crash loop
                self.pause = RESTART_PAUSE[0]
            LOG.warning(
                "warm ClientApps: the fork server exited with code %s; restarting in %.0f s (messages %s meanwhile)",
                self.server.returncode,
                self.pause,
                "start cold" if self.runtime_api_address is None else "wait",
            )
            self.next_start = now + self.pause
            self.pause = min(self.pause * 2, RESTART_PAUSE[1])
        elif now >= self.next_start:
            self.next_start = 0.0
            self.restarts += 1
            self.start()

    def poke(self) -> None:
        """A message arrived at the SuperNode: the fork server in the SuperExec's role asks for it now."""
        if self.runtime_api_address is not None and self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.server.send_signal(signal.SIGUSR1)

    def pids(self) -> list[int]:
        """The fork server's process id, while it runs (its forked ClientApps are below it)."""
        return [self.server.pid] if self.server is not None and self.server.poll() is None else []

    def stop(self, grace: float) -> None:
        if self.server is not None and self.server.poll() is None:
            processes.stop(self.server, grace)
        shutil.rmtree(self.folder, ignore_errors=True)
