"""
A thread-safe log of the API requests the server received, for benchmarks and assertions.

It is written from the server's thread and read from the tests' thread. kmock's own
request records (``emulator.requests``) keep whole bodies and are not safe to read
from another thread; this one keeps only what is needed to count requests.
"""

import dataclasses
import threading
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    method: str  # GET, POST, PUT, PATCH, DELETE
    path: str  # e.g. /apis/kubeflower.io/v1alpha1/namespaces/default/federatedtrainingjobs/x/status
    query: str  # the raw query string, e.g. watch=true&resourceVersion=12

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and any(p in ("watch=true", "watch=1", "watch=True") for p in self.query.split("&"))


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[ApiRequest] = []

    def record(self, method: str, path: str, query: str) -> None:
        with self._lock:
            self._items.append(ApiRequest(method, path, query))

    def snapshot(self) -> list[ApiRequest]:
        with self._lock:
            return list(self._items)

    def __iter__(self) -> Iterator[ApiRequest]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """How many requests had this method (any if None) and a path containing the text."""
        return sum(1 for r in self if (method is None or r.method == method.upper()) and path_contains in r.path)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
