"""The fork server of warm ClientApps: Flower's `flwr-clientapp`, forked from a process that has
already imported torch, numpy, Flower and the app's heavy modules.

A stock ClientApp message starts a new Python that spends about 3.3 CPU-seconds importing before
it does 0.1 s of work. Here the `flwr-clientapp` shim (`clientapp_shim.py`, first on the
SuperNode's PATH) connects to this server's Unix socket and passes its argv, environment, working
folder and standard streams (file descriptors, SCM_RIGHTS); the server forks, and the child runs
Flower's own `flwr-clientapp` entry point with that argv, so each message still runs in a process
of its own, through Flower's own code. The shim relays signals to the child and exits as it does.

The rules that keep a fork safe and faithful (README, "Warm ClientApps"):
- The server imports and never computes: no torch op (a parent that ran a multi-threaded op
  deadlocks its children), no network. Before every fork it checks that it has one thread, that
  CUDA is not initialised and that it holds no TCP socket; when one fails it refuses (the shim
  then runs the stock `flwr-clientapp`) and exits, for the client entry point to start a fresh one.
- Import-time settings (OMP_NUM_THREADS, Flower's log level) are read in this process: the client
  entry point starts it with the SuperNode's own environment.
- A child reseeds `random`, numpy and torch from the OS, as a fresh process would be seeded.
- A child dies with the server (parent-death signal) and is killed when its shim's connection
  closes (a killed shim); every child is reaped (pidfd).

Protocol, one connection per message. Shim to server: a 4-byte big-endian length, then JSON
{"argv": [...], "env": {...}, "cwd": "...", "fds": [0, 1, 2]} with the listed standard streams
attached to the first bytes; later, lines {"signal": N}. Server to shim: lines {"pid": N} or
{"refused": "why"}, then {"exit": CODE} or {"signal": N} when the child has ended.

The SuperExec's role (`--runtime-api-address`, the default of warm ClientApps): the SuperNode runs
with `--isolation process`, so it starts no SuperExec, and this server asks the SuperNode's Runtime
API for ClientApp messages itself (Flower's `AcquireTask`, as Flower's SuperExec does), then forks a
child per message that runs Flower's `flwr-clientapp` entry point with the argv Flower's SuperExec
would give it (`--runtime-api-address A --token T --insecure --parent-pid P`). That is one process
fewer per client pod (no SuperExec) and one fewer per message (no shim). It asks every `--poll`
seconds, and at once on SIGUSR1, which the client entry point sends when the SuperNode logs that
a message arrived: a message waits for no poll, and the idle polls can be rare. Its HTTP
connection to the SuperNode is closed before every fork.

This module imports only the standard library at the top: the socket is listening before the
heavy imports start, so a shim that connects early waits instead of falling back.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from kubeflower_workload import clientapp_shim

LOG = logging.getLogger("kubeflower-forkserver")

FLOWER_VERSION = "1.42.0"
"""The Flower release whose layout this module relies on (see `flwr_clientapp_entry_point`)."""
CLIENTAPP_COMMAND = "flwr-clientapp"
CLIENTAPP_ENTRY_POINT = "flwr.supernode.cli:flwr_clientapp"
"""The console script Flower's SuperExec starts by name, once per ClientApp message."""

MAX_REQUEST = 1 << 20
REQUEST_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


class Refusal(Exception):
    """This process may not fork now; the message says why."""


def flwr_clientapp_entry_point() -> Callable[[], None]:
    """Flower's `flwr-clientapp` function, after checking that Flower still has the layout we rely on.

    Pinned to Flower 1.42.0: the SuperExec starts `flwr-clientapp` by name through PATH (so our
    shim of that name is started instead), and that console script is
    `flwr.supernode.cli:flwr_clientapp`, which parses `sys.argv`. A test calls this: it fails
    loudly when an upgrade changes either.
    """
    version = metadata.version("flwr")
    if version != FLOWER_VERSION:
        raise RuntimeError(f"warm ClientApps are written for flwr {FLOWER_VERSION}, found {version}: check its layout")
    scripts = [
        ep
        for ep in metadata.entry_points(group="console_scripts", name=CLIENTAPP_COMMAND)
        if ep.dist and ep.dist.name == "flwr"
    ]
    if len(scripts) != 1 or scripts[0].value != CLIENTAPP_ENTRY_POINT:
        raise RuntimeError(f"flwr's {CLIENTAPP_COMMAND} console script is not {CLIENTAPP_ENTRY_POINT}: {scripts}")
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    if TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP] != CLIENTAPP_COMMAND:
        raise RuntimeError(f"Flower's SuperExec no longer starts {CLIENTAPP_COMMAND!r} for a ClientApp message")
    check_superexec_layout()
    loaded: Callable[[], None] = scripts[0].load()
    return loaded


RECEIVED_LOG = b"Received successfully"
"""What Flower 1.42's SuperNode logs once a message from the SuperLink is stored for its ClientApp
(`flwr.supernode.start_client_internal`): the client entry point then pokes this server (SIGUSR1)."""


def check_superexec_layout() -> None:
    """Fail unless Flower still has what the SuperExec role relies on (pinned to 1.42.0; a test calls it).

    Flower's SuperExec asks `Runtime.AcquireTask` for a task and starts `flwr-clientapp` with the
    Runtime API's address, the task's token, `--insecure` and its own pid (subprocess executor);
    the SuperNode's `--isolation process` starts no SuperExec; and the SuperNode logs
    RECEIVED_LOG when a message arrives.
    """
    import inspect

    from flwr.proto.runtime_pb2 import AcquireTaskRequest, AcquireTaskResponse
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TaskType
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import subprocess_executor
    from flwr.supernode import start_client_internal

    problems = []
    if TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[TaskType.CLIENT_APP] != "--runtime-api-address":
        problems.append("flwr-clientapp no longer takes --runtime-api-address")
    launch = inspect.getsource(subprocess_executor.SubprocessExecutor.launch)
    if not all(arg in launch for arg in ('"--token"', '"--insecure"', '"--parent-pid"')):
        problems.append("the SuperExec starts flwr-clientapp with other flags")
    if not hasattr(RuntimeHttpClient, "AcquireTask"):
        problems.append("the Runtime API has no AcquireTask")
    if set(AcquireTaskRequest.DESCRIPTOR.fields_by_name) != {"supported_task_types", "agentapp_fab_hashes"} or not {
        "task",
        "token",
    } <= set(AcquireTaskResponse.DESCRIPTOR.fields_by_name):
        problems.append("AcquireTask's messages changed")
    source = inspect.getsource(start_client_internal)
    if "ISOLATION_MODE_SUBPROCESS" not in source or RECEIVED_LOG.decode() not in source:
        problems.append("the SuperNode's isolation modes or its 'message received' log changed")
    if problems:
        raise RuntimeError(f"Flower's SuperExec role changed: {'; '.join(problems)}")


class TaskSource:
    """The SuperExec's part: the next ClientApp message's token, from the SuperNode's Runtime API.

    One HTTP connection (Flower's own client), closed before every fork (`close`): a child must not
    share it. A SuperNode that does not answer (starting, or being restarted by the client entry
    point) is logged once and asked again at the next poll.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: Any = None
        self.failing = False

    def acquire(self) -> str | None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.runtime import RuntimeHttpClient

        if self.client is None:
            self.client = RuntimeHttpClient.from_server_address(
                server_address=self.address,
                insecure=True,  # the SuperNode's Runtime API on loopback, as for Flower's own SuperExec
                root_certificates=None,
                interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
            )
        try:
            response = self.client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as exc:
            if not self.failing:
                LOG.info("the SuperNode's Runtime API at %s does not answer yet: %s", self.address, exc)
            self.failing = True
            self.close()
            return None
        if self.failing:
            LOG.info("the SuperNode's Runtime API at %s answers", self.address)
        self.failing = False
        if response.HasField("task") and response.token:
            return str(response.token)
        return None

    def argv(self, token: str) -> list[str]:
        """The flwr-clientapp arguments Flower's SuperExec gives a ClientApp message."""
        return ["--runtime-api-address", self.address, "--token", token, "--insecure", "--parent-pid", str(os.getpid())]

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


def thread_count() -> int:
    """Threads of this process, native ones included (a BLAS pool is invisible to `threading`)."""
    return len(os.listdir("/proc/self/task"))


def tcp_sockets() -> list[str]:
    """Our file descriptors that are TCP sockets (a connection shared with a child would be corrupted)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        inodes.update(line.split()[9] for line in lines if len(line.split()) > 9)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            found.append(f"fd {fd}: {target}")
    return found


def check_fork_safe() -> None:
    """Refusal unless forking now gives children a sound copy of this process."""
    if (threads := thread_count()) != 1:
        raise Refusal(f"{threads} threads (a fork copies only one; the others' locks stay held in the child)")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise Refusal("CUDA is initialised (a forked child cannot use it)")
    if sockets := tcp_sockets():
        raise Refusal(f"TCP sockets are open ({', '.join(sockets)}): a child would share the connection")


def preload(modules: Sequence[str]) -> list[str]:
    """Import Flower's ClientApp code and `modules`; the names that failed, each logged with why."""
    flwr_clientapp_entry_point()
    importlib.import_module("flwr.supernode.runtime.run_clientapp")
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            LOG.error("cannot pre-import %r (tool.kubeflower.preload in the app's pyproject.toml): %s", name, exc)
            failed.append(name)
    return failed


def reseed() -> None:
    """Seed `random`, numpy's and torch's global generators from the OS, as a fresh process is.

    Without it every child would draw the numbers the server's generators hold: an unseeded app
    would shuffle its data the same way in every round.
    """
    random.seed()
    if (numpy := sys.modules.get("numpy")) is not None:
        numpy.random.seed()
    if (torch := sys.modules.get("torch")) is not None:
        torch.seed()


@dataclass
class Request:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: dict[int, int]
    """Standard stream number -> the received descriptor."""


def parse_request(payload: bytes, received: list[int]) -> Request:
    """The shim's request, checked (the socket is private to our user, but a bad peer must not crash us)."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("the request must be a JSON object")
    argv, env, cwd, streams = data.get("argv"), data.get("env"), data.get("cwd"), data.get("fds")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not isinstance(streams, list) or len(streams) != len(received) or not set(streams) <= {0, 1, 2}:
        raise ValueError(f"fds {streams} do not match the {len(received)} descriptors received")
    return Request(argv, env, cwd, dict(zip(streams, received, strict=True)))


def read_request(conn: socket.socket) -> Request:
    """One request from a new connection (blocking, with a timeout)."""
    conn.settimeout(REQUEST_TIMEOUT)
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    try:
        if len(data) < 4:
            raise ValueError("short request")
        (length,) = struct.unpack(">I", data[:4])
        if length > MAX_REQUEST:
            raise ValueError(f"request of {length} bytes")
        payload = data[4:]
        while len(payload) < length:
            chunk = conn.recv(length - len(payload))
            if not chunk:
                raise ValueError("connection closed mid-request")
            payload += chunk
        return parse_request(payload, fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def send_line(conn: socket.socket, message: dict[str, object]) -> None:
    try:
        conn.setblocking(True)
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the shim is gone; its child is killed when we see the connection close


@dataclass
class Child:
    pid: int
    pidfd: int
    conn: socket.socket | None
    """The shim's connection; None for a message this server acquired itself (the SuperExec role)."""
    buffer: bytes = b""


@dataclass
class Server:
    """The accept loop: one forked child per connection (or per acquired message), reaped through its pidfd."""

    listener: socket.socket
    entry_point: Callable[[], None]
    tasks: TaskSource | None = None
    poll: float = 0.5
    child_unset: Sequence[str] = ()
    """Variables of our environment that are ours only (set for this server), not the children's."""
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    children: dict[int, Child] = field(default_factory=dict)

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        poke = wakeup = None
        if self.tasks is not None:  # SIGUSR1: a message arrived at the SuperNode, ask for it now
            poke, wakeup = socket.socketpair()
            for end in (poke, wakeup):
                end.setblocking(False)
            signal.set_wakeup_fd(wakeup.fileno())
            signal.signal(signal.SIGUSR1, lambda *_: None)
            self.selector.register(poke, selectors.EVENT_READ, "poke")
        next_ask = time.monotonic()
        while True:
            wait = max(0.0, next_ask - time.monotonic()) if self.tasks is not None else None
            events = self.selector.select(wait)
            for key, _ in events:
                if key.data is None:
                    self._accept()
                elif key.data == "poke":
                    with contextlib.suppress(BlockingIOError):
                        poke.recv(4096)  # type: ignore[union-attr]
                elif key.fileobj is key.data.conn:
                    self._from_shim(key.data)
                else:
                    self._reap(key.data)
            poked = any(key.data == "poke" for key, _ in events)
            if self.tasks is not None and (poked or time.monotonic() >= next_ask):
                self._acquire(self.tasks, [poke, wakeup])
                next_ask = time.monotonic() + self.poll

    def _acquire(self, tasks: TaskSource, close: list[object]) -> None:
        """Ask the SuperNode for ClientApp messages; fork a child for each, as Flower's SuperExec starts one."""
        while True:
            check_fork_safe()  # before taking a message that we then could not run
            token = tasks.acquire()
            tasks.close()  # no connection may be open when we fork
            if token is None:
                return
            env = {k: v for k, v in os.environ.items() if k not in self.child_unset}
            streams = {stream: os.dup(stream) for stream in (0, 1, 2)}  # ours: the pod's log
            request = Request(tasks.argv(token), env, os.getcwd(), streams)
            self._fork(request, None, close)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.getuid():  # the folder is 0700; this is a second lock on the same door
            conn.close()
            return
        try:
            request = read_request(conn)
        except (OSError, ValueError) as exc:
            LOG.warning("bad request from a shim: %s", exc)
            send_line(conn, {"refused": f"bad request: {exc}"})
            conn.close()
            return
        try:
            check_fork_safe()
        except Refusal as exc:
            send_line(conn, {"refused": str(exc)})
            raise
        self._fork(request, conn, [])

    def _fork(self, request: Request, conn: socket.socket | None, close: list[object]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            others = [c.conn for c in self.children.values() if c.conn is not None]
            run_child(
                request,
                self.entry_point,
                os.getppid(),
                [self.listener, *([conn] if conn is not None else []), self.selector, *others, *close],
                [c.pidfd for c in self.children.values()],
            )
        for fd in request.fds.values():
            os.close(fd)
        child = Child(pid, os.pidfd_open(pid), conn)
        self.children[pid] = child
        self.selector.register(child.pidfd, selectors.EVENT_READ, child)
        if conn is not None:
            conn.setblocking(False)
            self.selector.register(conn, selectors.EVENT_READ, child)
            send_line(conn, {"pid": pid})

    def _from_shim(self, child: Child) -> None:
        """A relayed signal, or the shim's end: a killed shim takes its child with it."""
        assert child.conn is not None
        try:
            data = child.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(child.conn)
            signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            try:
                number = int(json.loads(line)["signal"])
            except (ValueError, KeyError, TypeError):
                continue
            if number in clientapp_shim.RELAYED:
                signal.pidfd_send_signal(child.pidfd, number)

    def _reap(self, child: Child) -> None:
        _, status = os.waitpid(child.pid, 0)
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        del self.children[child.pid]
        ended: dict[str, object] = (
            {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
        )
        if child.conn is None:
            if ended != {"exit": 0}:
                LOG.warning("ClientApp process %d ended with %s", child.pid, ended)
            return
        send_line(child.conn, ended)
        with contextlib.suppress(KeyError):  # already gone when the shim closed first
            self.selector.unregister(child.conn)
        child.conn.close()


def run_child(
    request: Request, entry_point: Callable[[], None], server_pid: int, close: list[object], close_fds: list[int]
) -> None:
    """In the forked child: become the shim's `flwr-clientapp` process, run Flower's entry point, exit."""
    code = 1
    try:
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # Named as the stock process is (ps, top, /proc/PID/comm), though its command line is ours.
        _libc().prctl(PR_SET_NAME, CLIENTAPP_COMMAND.encode(), 0, 0, 0)
        if os.getppid() != server_pid:  # the server died before the line above
            os._exit(1)
        for obj in close:  # the server's sockets: a shim must see EOF when the server goes, not when we do
            obj.close()  # type: ignore[attr-defined]
        for fd in close_fds:
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(request.fds.get(stream, null), stream)
        for fd in {*request.fds.values(), null}:
            os.close(fd)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        atexit._clear()  # the server's exit handlers are not the child's
        reseed()
        sys.argv = [CLIENTAPP_COMMAND, *request.argv]  # Flower reads its name from argv[0]
        code = _run(entry_point)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run(entry_point: Callable[[], None]) -> int:
    """The entry point, ended the way the interpreter ends a script: the exit code it would give."""
    try:
        entry_point()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]  # wait for non-daemon threads, as at interpreter exit
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        logging.shutdown()
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def listen(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, in a folder only our user can enter (checked)."""
    folder = path.parent
    mode = folder.stat().st_mode & 0o777
    if mode & 0o077 or folder.stat().st_uid != os.getuid():
        raise RuntimeError(f"{folder} must be private to this user (mode 0700), not {oct(mode)}")
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


def _exit_now(*_: object) -> None:
    """SIGTERM: exit at once (tearing down torch's modules takes seconds, and the pod is stopping);
    the children get SIGTERM from their parent-death signal."""
    sys.stdout.flush()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fork server of warm ClientApps (started by kubeflower-client).")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--preload", action="append", default=[], help="a module to import before serving")
    parser.add_argument(
        "--runtime-api-address",
        help="the SuperNode's Runtime API (host:port): acquire its ClientApp messages, as Flower's SuperExec does",
    )
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between asks when not poked (SIGUSR1)")
    parser.add_argument(
        "--child-unset", action="append", default=[], help="a variable of ours that the children must not get"
    )
    args = parser.parse_args(argv)
    # Our own logger only: a handler on the root logger would be inherited by every child.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    listener = listen(args.socket)  # before the imports: a shim that connects now waits in the backlog
    signal.signal(signal.SIGTERM, _exit_now)
    entry_point = flwr_clientapp_entry_point()
    failed = preload(args.preload)
    try:
        check_fork_safe()
    except Refusal as exc:
        LOG.error("refusing to serve after the imports: %s", exc)
        return 3
    # Everything imported so far is out of the garbage collector's reach, in us and in every child: a
    # child's full collection (Flower runs one per ArrayRecord conversion) would otherwise visit, and
    # so write to and copy, every page of torch's and Flower's objects (measured: 0.17 CPU-s and
    # 15,600 page faults for one gc.collect() in a child, 0.014 s and 440 faults with this).
    gc.freeze()
    LOG.info(
        "serving warm ClientApps on %s (%d modules loaded; not pre-imported: %s)",
        args.socket,
        len(sys.modules),
        ", ".join(failed) or "none",
    )
    try:
        tasks = TaskSource(args.runtime_api_address) if args.runtime_api_address else None
        Server(listener, entry_point, tasks, args.poll, args.child_unset).serve()
    except Refusal as exc:
        LOG.error("refusing to fork, exiting for a fresh start: %s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
