"""A container as a local process: started in its pod's network namespace through the sandbox shim.

`ip netns exec NETNS python -I -S sandbox.py CONFIG` -- `ip` enters the namespace (and mounts the
pod's /etc/hosts, resolv.conf and hostname), then becomes the shim, which becomes the container's
parent. The container is PID 1 of its own PID namespace: SIGKILL to it ends everything it started.
Stopping is what the kubelet does: SIGTERM, then SIGKILL after the grace period.

`CrashLoopBackOff` is the kubelet's restart delay: the first restart is immediate, the next ones
wait 10 s, 20 s, 40 s ... up to 300 s, and a container that ran for 10 minutes starts over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.podrunner.images import SYSTEM_PATH, exposures
from testbed.podrunner.podspec import Launch

SANDBOX = Path(__file__).with_name("sandbox.py")


class ContainerProcess:
    """One run of one container (a restart is a new ContainerProcess)."""

    def __init__(
        self,
        netns: str,
        launch: Launch,
        mounts: list[dict],
        hostname: str,
        rundir: Path,
        log: Path,
        files: dict[str, str] | None = None,
        mount_points: Any = None,
    ) -> None:
        self.netns, self.launch, self.mounts, self.hostname = netns, launch, mounts, hostname
        self.mount_points = mount_points
        self.files = files or {}
        """Files of the image (/etc/passwd ...): path in the container -> content."""
        self.rundir, self.log = rundir, log
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.finished_at = 0.0
        self.exit_code: int | None = None
        self.kill_deadline: float | None = None
        self._pid: int | None = None

    def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        pid_file = self.rundir / "pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        image_files = []
        for target, content in self.files.items():
            source = self.rundir / "image" / target.lstrip("/")
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(content)
            source.chmod(0o644)
            image_files.append({"source": str(source), "target": target, "readOnly": True})
        config = {
            "argv": self.launch.argv,
            "env": self.launch.env,
            "uid": self.launch.uid,
            "gid": self.launch.gid,
            "groups": self.launch.groups,
            "workingDir": self.launch.workdir,
            "readOnlyRootFilesystem": self.launch.read_only_root,
            "noNewPrivileges": self.launch.no_new_privileges,
            "dropCapabilities": self.launch.drop_capabilities,
            "hostname": self.hostname,
            "mounts": image_files + self.mounts,
            "expose": exposures(),
            "overlays": getattr(self.mount_points, "overlays", []),
            "mkdirs": getattr(self.mount_points, "mkdirs", []),
            "touch": getattr(self.mount_points, "touch", []),
            "pidFile": str(pid_file),
            "parentPid": os.getpid(),
        }
        path = self.rundir / "config.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)  # the environment may hold a Secret's values
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-I", "-S", str(SANDBOX), str(path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": SYSTEM_PATH},
                start_new_session=True,  # a terminal's Ctrl-C is for pytest, not for the pods
            )
        self.started_at = time.time()

    @property
    def pid(self) -> int | None:
        """The container's PID 1, as the root PID namespace numbers it (None until it exists)."""
        if self._pid is None:
            with contextlib.suppress(OSError, ValueError):
                self._pid = int((self.rundir / "pid").read_text())
        return self._pid

    def poll(self) -> int | None:
        """The exit code once the container has ended (128 + signal when killed), else None."""
        if self.exit_code is None and self.process is not None and self.process.poll() is not None:
            self.exit_code = self.process.returncode
            self.finished_at = time.time()
        return self.exit_code

    def signal(self, sig: int) -> None:
        pid = self.pid
        if pid is not None and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        elif self.process is not None and self.poll() is None and sig == signal.SIGKILL:
            self.process.kill()  # the container does not exist yet: end its shim

    def terminate(self, grace: float) -> None:
        """SIGTERM now and SIGKILL when `grace` seconds have passed (see `enforce`)."""
        if self.kill_deadline is None:
            self.signal(signal.SIGTERM)
            self.kill_deadline = time.time() + grace

    def enforce(self) -> None:
        if self.kill_deadline is not None and time.time() >= self.kill_deadline and self.poll() is None:
            self.signal(signal.SIGKILL)

    def kill_and_wait(self, timeout: float = 10.0) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
            self.poll()


class CrashLoopBackOff:
    """The kubelet's restart delays for one container."""

    def __init__(self, initial: float = 10.0, cap: float = 300.0) -> None:
        self.initial, self.cap = initial, cap
        self.current = 0.0
        self.last = 0.0

    def delay(self, finished_at: float) -> float:
        """Seconds after `finished_at` at which the container may start again; advances the backoff."""
        if self.current and finished_at - self.last > 2 * self.cap:
            self.current = 0.0  # it ran well for long enough: start over
        delay = self.current
        self.current = min(self.cap, self.current * 2 if self.current else self.initial)
        self.last = finished_at
        return delay
