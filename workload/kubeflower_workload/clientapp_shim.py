"""`flwr-clientapp`, the shim of warm ClientApps: hands this message's process to the fork server.

Flower's SuperExec starts `flwr-clientapp ARGS` by name for every ClientApp message; the client
entry point puts this script first on the SuperNode's PATH under that name (see `warm.py`). It
passes its argv, environment, working folder and standard streams to the fork server
(`forkserver.py`), relays SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the forked
child, and exits as the child did (the same exit code, or killed by the same signal). If this
process is killed, its connection closes and the server kills the child.

No fork server (or one that refuses, or warm mode that cannot apply): it execs the stock
`flwr-clientapp` and says why on stderr. Standard library only, run with `python -IS`: it
starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: nothing more to import when a message starts
    from collections.abc import Iterator
    from typing import Any

ENV_SOCKET = "KUBEFLOWER_FORKSERVER_SOCKET"
ENV_REAL_CLIENTAPP = "KUBEFLOWER_REAL_CLIENTAPP"
RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
COLD_ONLY_FLAGS = ("--allow-runtime-dependency-installation",)
"""Flags under which a message must start cold: installed dependencies would not be seen by
modules the fork server imported before the installation."""


def fallback(reason: str) -> None:
    """Exec the stock `flwr-clientapp`, after saying why on stderr."""
    real = os.environ.get(ENV_REAL_CLIENTAPP, "")
    print(
        f"kubeflower: warm ClientApp not used ({reason}); starting the stock flwr-clientapp",
        file=sys.stderr,
        flush=True,
    )
    if not real:
        print(f"kubeflower: {ENV_REAL_CLIENTAPP} is not set: cannot find the stock flwr-clientapp", file=sys.stderr)
        sys.exit(127)
    os.execv(real, [real, *sys.argv[1:]])


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def streams() -> list[int]:
    """The standard streams this process has open (a SuperExec may run without stdin)."""
    found = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def send_request(sock: socket.socket) -> None:
    fds = streams()
    payload = json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd(), "fds": fds}).encode()
    data = struct.pack(">I", len(payload)) + payload
    sent = socket.send_fds(sock, [data], fds)
    sock.sendall(data[sent:])


def lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """The fork server's replies, one JSON object a line, until it closes the connection."""
    buffer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield json.loads(line)


def die_like(message: dict[str, Any]) -> None:
    """Exit the way the child did."""
    if "signal" in message:
        number = int(message["signal"])
        sys.stdout.flush()
        if number in RELAYED:  # our relay handler would catch it (SIGKILL has no handler to reset)
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        sys.exit(128 + number)  # a signal that does not end a process by default
    sys.exit(int(message["exit"]))


def main() -> None:
    path = os.environ.get(ENV_SOCKET, "")
    flag = next((f for f in COLD_ONLY_FLAGS if f in sys.argv[1:]), None)
    if flag:
        fallback(f"{flag} is set")
    if not path:
        fallback(f"{ENV_SOCKET} is not set")
    try:
        sock = connect(path)
        send_request(sock)
    except OSError as exc:
        fallback(f"no fork server at {path}: {exc.strerror or exc}")
    replies = lines(sock)
    try:
        first = next(replies, None)
    except (OSError, ValueError) as exc:
        first = {"refused": str(exc)}
    if first is None or "pid" not in first:
        fallback(f"the fork server refused: {(first or {}).get('refused', 'it closed the connection')}")

    def relay(number: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"signal": number}).encode() + b"\n")

    for number in RELAYED:
        signal.signal(number, relay)
    try:
        for message in replies:
            if "exit" in message or "signal" in message:
                die_like(message)
    except OSError:
        pass
    print("kubeflower: the fork server went away before the ClientApp ended", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
