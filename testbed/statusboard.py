"""A stand-in for job servers' `GET /status`, for operator tests that run no Flower.

One HTTP server on a free port answers `/<namespace>/<name>/status` with whatever the test posted
for that job: a status document, a raw `Reply` (a hostile server: a redirect, a huge or dripping
body, text that is not a document), or 503 when it posted nothing (an unreachable server). The
operator finds it through its real `KUBEFLOWER_STATUS_URL` setting.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from kubeflower.core import contract
from kubeflower.core.server_status import ServerStatus


@dataclass(frozen=True)
class Reply:
    """A raw answer: status code, headers and body, the body sent `drip` seconds per chunk of
    `chunk` bytes when `drip` is set (a server that holds its reader)."""

    body: bytes
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    drip: float = 0.0
    chunk: int = 1


class StatusBoard:
    def __init__(self) -> None:
        self._documents: dict[tuple[str, str], ServerStatus | Reply] = {}
        self._lock = threading.Lock()
        self.reads = 0
        self.failures = 0
        """Reads answered 503 (no document posted)."""
        self.reads_by_job: Counter[tuple[str, str]] = Counter()
        self.stops: list[tuple[str, str, str]] = []
        """`POST /<namespace>/<name>/stop` received: (namespace, name, the stop token sent)."""
        board = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                with board._lock:
                    board.reads += 1
                    key = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
                    board.reads_by_job[key] += 1
                    document = board._documents.get(key)
                    board.failures += document is None
                if document is None:
                    self.send_error(503, "no status document")
                    return
                reply = document if isinstance(document, Reply) else Reply(document.to_json().encode())
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if not reply.drip:
                    self.wfile.write(reply.body)
                    return
                try:
                    for start in range(0, len(reply.body), reply.chunk):
                        self.wfile.write(reply.body[start : start + reply.chunk])
                        self.wfile.flush()
                        time.sleep(reply.drip)
                except OSError:
                    pass  # the reader gave up: what a drip is for

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[2] == "stop":
                    with board._lock:
                        board.stops.append((parts[0], parts[1], self.headers.get(contract.STOP_TOKEN_HEADER, "")))
                    self.send_response(202)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        """A KUBEFLOWER_STATUS_URL pointing at this board."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/{{namespace}}/{{name}}/status"

    def post(self, namespace: str, name: str, document: ServerStatus | Reply | None) -> None:
        with self._lock:
            if document is None:
                self._documents.pop((namespace, name), None)
            else:
                self._documents[(namespace, name)] = document

    def reads_of(self, namespace: str, name: str) -> int:
        with self._lock:
            return self.reads_by_job[(namespace, name)]

    def __enter__(self) -> StatusBoard:
        self._thread.start()
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
