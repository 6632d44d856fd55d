"""Reading a job server's status document over HTTP.

The server runs the user's image, so its answer is untrusted: `fetch` reads it within one deadline
and a size cap, follows no redirect and checks every field; a failure is described in our words
(which field, which limit), never with the body's text.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse

from kubeflower.core import contract
from kubeflower.core.server_status import fetch
from kubeflower_operator.observed import Poll
from kubeflower_operator.settings import Settings


def status_url(settings: Settings, name: str, namespace: str) -> str:
    return settings.status_url.format(name=name, namespace=namespace, port=contract.STATUS_PORT)


def stop_url(status: str) -> str:
    """The server's stop endpoint, beside its status document (`.../status` -> `.../stop`)."""
    return status.rsplit("/status", 1)[0] + "/stop"


def stop(url: str, token: str, timeout: float) -> int:
    """POST the job's stop to its server (its UID as the token); the HTTP status. Raises OSError."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        connection.request("POST", parts.path, headers={contract.STOP_TOKEN_HEADER: token, "Content-Length": "0"})
        return connection.getresponse().status
    except http.client.HTTPException as exc:
        raise OSError(f"not an HTTP answer: {type(exc).__name__}") from None
    finally:
        connection.close()


def poll(url: str, failing_since: float | None, timeout: float, rounds: int) -> Poll:
    """The next Poll: the document, or the error and since when reads have been failing.

    `failing_since` comes from the job's status (`statusFailingSince`), not from memory, so an
    operator restarted more often than the tolerance still fails a job whose server is dead. A
    round past the job's `rounds` is refused like any other nonsense.
    """
    since = failing_since if failing_since is not None else time.time()
    try:
        document = fetch(url, timeout)
        if document.current_round > rounds:
            raise ValueError(f"not a status document: currentRound {document.current_round} is past spec.rounds")
        return Poll(document=document)
    except ValueError as exc:  # too large, not a status document
        return Poll(error=str(exc)[:500], failing_since=since, invalid=True)
    except OSError as exc:  # unreachable, too slow, an HTTP error
        return Poll(error=f"{type(exc).__name__}: {exc}"[:500], failing_since=since)
