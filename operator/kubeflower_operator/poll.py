"""Reading a job server's status document over HTTP."""

from __future__ import annotations

import time

from kubeflower.core import contract
from kubeflower.core.server_status import fetch
from kubeflower_operator.observed import Poll
from kubeflower_operator.settings import Settings


def status_url(settings: Settings, name: str, namespace: str) -> str:
    return settings.status_url.format(name=name, namespace=namespace, port=contract.STATUS_PORT)


def poll(url: str, previous: Poll, timeout: float) -> Poll:
    """The next Poll: the document, or the error and since when reads have been failing."""
    try:
        return Poll(document=fetch(url, timeout))
    except (OSError, ValueError) as exc:  # unreachable, an HTTP error; not a status document
        since = previous.failing_since if previous.failing_since is not None else time.time()
        return Poll(document=None, error=f"{type(exc).__name__}: {exc}", failing_since=since)
