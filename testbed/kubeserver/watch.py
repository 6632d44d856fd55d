"""
The event log behind watches: every write appends one change with its resourceVersion.

A watch from ``resourceVersion=N`` replays exactly the changes after N and then
follows the live ones, so nothing is lost or repeated between a list (which
answers the resourceVersion of the last write) and the watch that continues it.
kmock's own watches snapshot the objects and subscribe to a bus afterwards, which
loses the writes made in between; kopf then waits forever for them.

The log is bounded: a watch from a resourceVersion older than the retained
changes gets a 410 ``Expired`` error event, as from a real server after
compaction, and kopf relists.

Everything here runs in the server's event loop thread, so appending and reading
need no locks; waiters are woken by swapping an :class:`asyncio.Event`.
"""

import asyncio
import bisect
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock

from . import errors

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclasses.dataclass(frozen=True)
class Change:
    rv: int
    key: kmock.resource  # the storage key of the resource (see ResourceSpec.storage_key)
    type: str
    obj: dict[str, Any]  # the stored object after the change (never mutated afterwards)
    old: dict[str, Any] | None  # the object before the change, to notice selector transitions


class EventLog:
    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._changes: list[Change] = []
        self._oldest_rv = 0  # a watch from any rv >= this one can be served
        self._appended = asyncio.Event()
        self._closed = False

    def append(self, change: Change) -> None:
        self._changes.append(change)
        if len(self._changes) > 2 * self._capacity:  # trim in batches: del is O(n)
            self._oldest_rv = self._changes[-self._capacity - 1].rv
            del self._changes[: -self._capacity]
        self._appended.set()
        self._appended = asyncio.Event()

    def since(self, rv: int) -> list[Change]:
        """The changes after ``rv``; 410 Expired if some of them are not retained anymore."""
        if rv < self._oldest_rv:
            raise errors.expired(f"too old resource version: {rv} ({self._oldest_rv})")
        return self._changes[bisect.bisect_right(self._changes, rv, key=lambda change: change.rv) :]

    async def wait(self, timeout: float) -> None:
        """Wait for the next append, for the timeout, or for closing, whichever comes first."""
        if not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._appended.wait(), timeout)

    def close(self) -> None:
        """Stop all watches at server shutdown instead of waiting for their timeouts."""
        self._closed = True
        self._appended.set()

    @property
    def closed(self) -> bool:
        return self._closed


def translate(change: Change, matches: Callable[[dict[str, Any]], bool]) -> str | None:
    """
    The event type a watcher with a selector sees, or None if it sees nothing.

    As on a real server, an object that starts matching a selector is ``ADDED``
    to that watcher, and one that stops matching is ``DELETED`` from it.
    """
    now = matches(change.obj)
    before = change.old is not None and matches(change.old)
    if change.type == MODIFIED and now != before:
        return ADDED if now else DELETED
    if change.type == DELETED:
        return DELETED if now or before else None
    return change.type if now else None


async def follow(
    log: EventLog, *, key: kmock.resource, since: int, matches: Callable[[dict[str, Any]], bool], timeout: float | None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield ``(type, object)`` for the changes after ``since`` until the timeout or closing."""
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = since
    while True:
        for change in log.since(cursor):
            cursor = change.rv
            event_type = translate(change, matches) if change.key == key else None
            if event_type is not None:
                yield event_type, change.obj
        remaining = 60.0 if deadline is None else deadline - time.monotonic()
        if remaining <= 0 or log.closed:
            return
        await log.wait(remaining)
