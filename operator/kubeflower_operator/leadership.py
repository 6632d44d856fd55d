"""Leader election through a coordination.k8s.io/v1 Lease, with fencing of the leader's writes.

Several operator replicas run; the one that holds the Lease works, the others wait in kopf's
startup (no watch, no write) until they can take it. Why not kopf's peering: it pauses peers of
equal priority and expires a dead one only after a minute, and a paused or partitioned operator
can still be writing; that is not leader election.

The rules, as client-go's leader election (times on each process's own monotonic clock, which
runs on while a process is stopped, so no clocks are compared between hosts):
- A candidate takes the Lease when it is free, or when it has seen the same record (holder and
  renewTime) unchanged for `LEASE_DURATION`; every write of the Lease carries its resourceVersion,
  so of two candidates only one wins.
- The holder renews every `RETRY_PERIOD`. Its writes are fenced: `Leadership.check()` (called
  before each write) refuses once `RENEW_DEADLINE` has passed since the send time of the last
  successful renewal, and the holder then exits (its pod restarts as a candidate).
  `RENEW_DEADLINE < LEASE_DURATION`: a holder that cannot renew has stopped writing before any
  candidate can take the Lease.
- A process woken from SIGSTOP exits at once if the deadline passed while it slept (a SIGCONT
  handler in the main thread, where kopf's own writes are sent), before any other code of it runs.
- On a clean stop the holder gives the Lease up, so the next one takes it within `RETRY_PERIOD`.
Hand-over when the holder dies: at most `LEASE_DURATION + RETRY_PERIOD` (11 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from kubeflower_operator import rest

LEASE_NAME = "kubeflower-operator"
"""The one Lease the replicas compete for, in the operator's namespace (deploy/rbac.yaml names it)."""
LEASES = ("coordination.k8s.io", "v1", "leases")
LEASE_DURATION = 10.0
RENEW_DEADLINE = 7.0
RETRY_PERIOD = 1.0
REQUEST_TIMEOUT = (2.0, 2.0)
"""(connect, read) seconds of one Lease request: a hung request must not outlast the deadline."""
EXIT_LOST = 3
"""Exit status of a leader that lost its Lease (the pod restarts and becomes a candidate)."""

log = logging.getLogger("kubeflower_operator.leadership")
UNREACHABLE = (OSError, urllib3.exceptions.HTTPError)
"""A request that got no answer (refused, reset, timed out): retried until the deadline."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """The pod's name (its hostname) and this process, so that a restarted container is a new holder."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def lose(reason: str) -> NoReturn:
    """Stop at once: no handler, no kopf task and no thread of this process writes again."""
    os.write(2, f"kubeflower operator: {reason}; exiting so that the new leader alone writes\n".encode())
    os._exit(EXIT_LOST)


@dataclass
class _Seen:
    """The Lease record as a candidate last saw it change, and when (monotonic)."""

    record: tuple[Any, ...] | None = None
    since: float = 0.0


class Leadership:
    """One process's candidacy and, once elected, its tenure."""

    def __init__(self, api_client: ApiClient, namespace: str, name: str, identity: str | None = None) -> None:
        self._client = api_client
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self._valid_until = 0.0  # monotonic; writes are allowed before it
        self._lease: dict[str, Any] | None = None
        self._seen = _Seen()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # Fencing.

    def check(self) -> None:
        """Before each write: refuse (and stop the process) once the renew deadline has passed."""
        if time.monotonic() >= self._valid_until:
            lose(f"the Lease {self.namespace}/{self.name} was not renewed within {RENEW_DEADLINE:g} s")

    @property
    def leading(self) -> bool:
        return time.monotonic() < self._valid_until

    # Candidacy.

    async def acquire(self) -> None:
        """Wait until this process holds the Lease (cancelled cleanly when the operator stops)."""
        announced = False
        while not await asyncio.to_thread(self._try_acquire):
            if not announced:
                log.info("standing by: the Lease %s/%s is held by another operator", self.namespace, self.name)
                announced = True
            await asyncio.sleep(RETRY_PERIOD)
        log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)

    def _try_acquire(self) -> bool:
        sent = time.monotonic()
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status != 404:
                self._warn("read", exc)
                return False
            return self._create(sent)
        except UNREACHABLE as exc:
            self._warn("read", exc)
            return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._seen.record:
            self._seen = _Seen(record, sent)
        expired = sent - self._seen.since >= float(spec.get("leaseDurationSeconds") or LEASE_DURATION)
        if holder and holder != self.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        lease["spec"] = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(LEASE_DURATION),
            "acquireTime": _now(),
            "renewTime": _now(),
            "leaseTransitions": transitions,
        }
        return self._replace(lease, sent)

    def _create(self, sent: float) -> bool:
        body: Any = {  # the client's methods take plain dicts as well as its models
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(LEASE_DURATION),
                "acquireTime": _now(),
                "renewTime": _now(),
                "leaseTransitions": 0,
            },
        }
        return self._write(
            "create",  # 409: another candidate created it first
            lambda: self._request("POST", rest.path(*LEASES, self.namespace), body),
            sent,
        )

    def _replace(self, lease: Any, sent: float) -> bool:
        """Write the Lease with its resourceVersion: refused (409) if anyone wrote it since we read it."""
        return self._write(
            "update",  # 409: someone wrote it since we read it
            lambda: self._request("PUT", rest.path(*LEASES, self.namespace, self.name), lease),
            sent,
        )

    def _write(self, verb: str, request: Callable[[], dict[str, Any]], sent: float) -> bool:
        """One write of the Lease; held until `sent` + RENEW_DEADLINE if the server took it. A 409
        (someone else wrote or created it first) is a lost race, not worth a warning."""
        try:
            self._lease = request()
        except ApiException as exc:
            if exc.status != 409:
                self._warn(verb, exc)
            return False
        except UNREACHABLE as exc:
            self._warn(verb, exc)
            return False
        self._valid_until = sent + RENEW_DEADLINE
        return True

    def _read(self) -> dict[str, Any]:
        return self._request("GET", rest.path(*LEASES, self.namespace, self.name))

    def _request(self, method: str, url_path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return rest.request(self._client, method, url_path, body, timeout=REQUEST_TIMEOUT)

    def _warn(self, verb: str, exc: Exception) -> None:
        why = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
        hint = {
            403: "the operator's Role must allow it (deploy/rbac.yaml)",
            404: "the namespace must exist (KUBEFLOWER_LEASE_NAMESPACE)",
        }.get(getattr(exc, "status", 0), "retrying")
        log.warning("cannot %s the Lease %s/%s: %s; %s", verb, self.namespace, self.name, why, hint)

    # Tenure.

    def start_renewing(self) -> None:
        """Renew in a thread of its own (not kopf's loop, which a busy operator may hold up)."""
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(RETRY_PERIOD):
            if not self.leading:
                lose(f"the Lease {self.namespace}/{self.name} was not renewed within {RENEW_DEADLINE:g} s")
            assert self._lease is not None
            lease = dict(self._lease)
            lease["spec"] = {**lease["spec"], "renewTime": _now()}
            sent = time.monotonic()
            if self._replace(lease, sent):
                continue
            try:
                current = self._read()
            except (ApiException, *UNREACHABLE):
                continue  # cannot tell: keep trying until the deadline
            holder = (current.get("spec") or {}).get("holderIdentity")
            if holder != self.identity:
                lose(f"the Lease {self.namespace}/{self.name} is now held by {holder}")
            self._lease = current  # still ours (a write of our own raced): renew from this version

    def release(self) -> None:
        """A clean stop: give the Lease up so that a standby takes it within a retry period."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=REQUEST_TIMEOUT[0] + REQUEST_TIMEOUT[1] + 1)
        if not self.leading or self._lease is None:
            return
        lease = dict(self._lease)
        lease["spec"] = {**lease["spec"], "holderIdentity": None, "renewTime": None, "acquireTime": None}
        self._valid_until = 0.0  # no write of ours after this one
        if self._replace(lease, time.monotonic()):
            log.info("gave up the Lease %s/%s", self.namespace, self.name)
        self._valid_until = 0.0

    def exit_on_late_wake(self) -> None:
        """In the main thread: a SIGCONT that finds the deadline passed ends the process before any
        other Python code of its main thread (kopf's loop, which sends kopf's writes) runs again."""

        def on_continue(signum: int, frame: FrameType | None) -> None:
            if self._valid_until and not self.leading:
                lose("woke after the Lease's renew deadline")

        try:
            signal.signal(signal.SIGCONT, on_continue)
        except ValueError:  # not the main thread (kopf.testing.KopfRunner): the other checks remain
            print("kubeflower operator: SIGCONT fencing needs the main thread", file=sys.stderr)


def lease_namespace() -> str:
    """The pod's own namespace (service account mount), else `default`."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"
