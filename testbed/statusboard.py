"""A stand-in for job servers' `GET /status`, for operator tests that run no Flower.

One HTTP server on a free port answers `/<namespace>/<name>/status` with whatever document the test
posted for that job, or 503 when it posted none (an unreachable server). The operator finds it
through its real `KUBEFLOWER_STATUS_URL` setting.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from kubeflower.core.server_status import ServerStatus


class StatusBoard:
    def __init__(self) -> None:
        self._documents: dict[tuple[str, str], ServerStatus] = {}
        self._lock = threading.Lock()
        self.reads = 0
        self.failures = 0
        """Reads answered 503 (no document posted)."""
        board = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                with board._lock:
                    board.reads += 1
                    document = board._documents.get((parts[0], parts[1])) if len(parts) == 3 else None
                    board.failures += document is None
                if document is None:
                    self.send_error(503, "no status document")
                    return
                body = document.to_json().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        """A KUBEFLOWER_STATUS_URL pointing at this board."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/{{namespace}}/{{name}}/status"

    def post(self, namespace: str, name: str, document: ServerStatus | None) -> None:
        with self._lock:
            if document is None:
                self._documents.pop((namespace, name), None)
            else:
                self._documents[(namespace, name)] = document

    def __enter__(self) -> StatusBoard:
        self._thread.start()
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
