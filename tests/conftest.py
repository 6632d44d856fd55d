"""Shared test plumbing: the operator under KopfRunner (waiting and the cluster view: `testbed.cluster`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

# The reconcile timer's interval is fixed when the handlers module is imported: keep tests brisk.
os.environ.setdefault("KUBEFLOWER_RECONCILE_INTERVAL", "0.3")


def free_port() -> int:
    """A port nothing listens on now (fixed ports were found taken on these machines)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_operator(kube: Any, namespaces: tuple[str, ...] = (), **env: str) -> Iterator[Any]:
    """The real operator (kubeflower_operator.handlers) logged in through the server's kubeconfig,
    its metrics on a free port unless `KUBEFLOWER_METRICS_PORT` is given; watching `namespaces`
    only when given (the namespaced install), else all."""
    from kopf.testing import KopfRunner

    settings = {"KUBECONFIG": str(kube.kubeconfig), "KUBEFLOWER_METRICS_PORT": str(free_port()), **env}
    with mock.patch.dict(os.environ, settings):
        scope = [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
        args = ["run", "--standalone", *scope, "-m", "kubeflower_operator.handlers"]
        with KopfRunner(args, timeout=30) as runner:
            yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
