"""Starting and stopping process trees, so that no process outlives the one that started it.

Flower's processes do not stay in one process group: SuperExec starts its own session, and it
starts a process per ServerApp run and per ClientApp message. Stopping by process group would miss
them, so a tree is walked through the process table (`/proc`, or `ps` where there is none). A
process that starts others calls `become_subreaper()` first (Linux): orphans of its tree are then
re-parented to it rather than to init, and `kill_descendants()` still finds them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubeflower.core import contract

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SUPEREXEC_POLL = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
NODE_SUPEREXEC_POLL_INTERVAL = "0.5"
"""Seconds between a client's SuperExec asks of its own SuperNode for work (Flower: 1 s).

Every ClientApp message waits up to this long before its process starts, twice a round with
separate train and evaluate messages; the asks go to the SuperNode on the same pod, never over
the network. Each ask costs CPU in both: measured idle, SuperNode and SuperExec together took
0.045 CPU-seconds a second at 0.1 s, 0.010 at 0.5 s and 0.0067 at Flower's 1 s. At 0.1 s that
was about 0.6 CPU-seconds per client per 14 s round of 10 clients on 2 cores, more than a warm
ClientApp message itself; 0.5 s costs a message 0.2 s of waiting on average. The server keeps
Flower's 1 s: its SuperExec asks the SuperLink, to start one ServerApp per job.
"""


def child_env(
    extra: Mapping[str, str] = {},
    direct: Sequence[str] = (),
    superexec_poll: str | None = None,
) -> dict[str, str]:
    """Our environment plus `extra`, ready for Flower's processes.

    - This interpreter's scripts come first on PATH: Flower starts `flower-superexec`,
      `flwr-serverapp` and `flwr-clientapp` by name, and they must be of our installation.
    - Flower's telemetry and update checks are off unless the environment says otherwise;
      so is `superexec_poll` (FLWR_SUPEREXEC_TASK_POLL_INTERVAL), where given.
    - Loopback and the `direct` hosts (the SuperLink) join NO_PROXY: Flower's HTTP clients honour
      HTTP(S)_PROXY, which a user may set for downloads, and a proxy cannot reach our SuperLink.
    """
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    if superexec_poll is not None:
        env.setdefault(SUPEREXEC_POLL, superexec_poll)
    for key, value in contract.FLOWER_ENV.items():
        if key != "FLWR_HOME":  # a pod's path; where unset, Flower's own default (~/.flwr) applies
            env.setdefault(key, value)
    for key in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in env.get(key, "").split(",") if h]
        env[key] = ",".join(dict.fromkeys([*hosts, *LOOPBACK, *direct]))
    return env


def become_subreaper() -> None:
    """Orphaned descendants become our children (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def start(command: Sequence[str], env: Mapping[str, str], output: Path | int | None = None) -> subprocess.Popen[bytes]:
    """A child in its own session, which gets SIGTERM if we die (Linux), even by SIGKILL.

    Its own session: a terminal's Ctrl-C reaches only us, and we stop the children in order.
    `output`: where its stdout and stderr go: a log file (appended), subprocess.PIPE, or ours.
    Start children before starting threads (the death signal is set between fork and exec).
    """
    options: dict[str, Any] = {"env": dict(env), "start_new_session": True}
    if sys.platform.startswith("linux"):
        options["preexec_fn"] = _terminate_with_parent
    if not isinstance(output, Path):
        stderr = None if output is None else subprocess.STDOUT
        return subprocess.Popen(list(command), stdout=output, stderr=stderr, **options)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as out:
        return subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, **options)


def _terminate_with_parent() -> None:
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free now, for children to listen on (picked by the OS)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def descendants(root: int, keep: Collection[int] = ()) -> list[int]:
    """Every process below `root`, parents before children; none of `keep` or below them."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _process_table():
        if pid not in keep:
            children.setdefault(ppid, []).append(pid)
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: for the process and everything below it."""
    tree = [process.pid, *descendants(process.pid)]
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    for pid in [*tree, *descendants(process.pid)]:
        _kill(pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def kill_descendants(rounds: int = 20, keep: Collection[int] = ()) -> None:
    """SIGKILL every process below us (orphans included, see `become_subreaper`) but `keep` and
    those below them, and reap them."""
    me = os.getpid()
    for _ in range(rounds):
        pids = descendants(me, keep)
        if not pids:
            return
        for pid in pids:
            _kill(pid)
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _process_table() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process."""
    proc = Path("/proc")
    if not proc.is_dir():
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False
        ).stdout
        return [(int(a), int(b)) for a, b in (line.split() for line in out.splitlines() if line.strip())]
    table = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        table.append((int(entry.name), int(fields[1])))
    return table
