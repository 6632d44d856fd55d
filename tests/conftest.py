"""Shared test plumbing: the operator under KopfRunner (waiting and the cluster view: `testbed.cluster`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

# The reconcile timer's interval is fixed when the handlers module is imported: keep tests brisk.
os.environ.setdefault("KUBEFLOWER_RECONCILE_INTERVAL", "0.3")


@contextmanager
def running_operator(kube: Any, **env: str) -> Iterator[Any]:
    """The real operator (kubeflower_operator.handlers) logged in through the server's kubeconfig."""
    from kopf.testing import KopfRunner

    settings = {"KUBECONFIG": str(kube.kubeconfig), **env}
    with mock.patch.dict(os.environ, settings):
        args = ["run", "--standalone", "--all-namespaces", "-m", "kubeflower_operator.handlers"]
        with KopfRunner(args, timeout=30) as runner:
            yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
