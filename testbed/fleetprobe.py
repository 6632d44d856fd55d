"""What a job's Flower port answers, path by path: the probe of the security tests.

`probe(host, port, name, ca)` POSTs an empty protobuf body to each path of `PATHS` over TLS
(verifying the server certificate against the job's CA, for the name `name`), exactly as written
(no normalisation: `http.client` sends the path as given), and once in plain HTTP; it returns the
HTTP status of each, or the error's name. Run as a module it prints that as JSON, so a test can run
it inside a pod's network namespace (`nsenter --net=/proc/PID/ns/net python -m testbed.fleetprobe
HOST PORT NAME CA`).

A path that reaches the SuperLink answers with the SuperLink's own status (a Fleet call without
a valid signature: 401); one that the front proxy refuses answers 404 from nginx.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys

FLEET = "/v1/fleet/pull-messages"
"""A Fleet API path: it must reach the SuperLink (which refuses it without a node's signature)."""
REFUSED = (
    "/v1/control/list-runs",
    "/v1/control/start-run",
    "/v1/runtime/pull-messages",
    "/docs",
    "/openapi.json",
    "/health",
    "/v1/fleet/../control/list-runs",
    "/v1/fleet/..%2Fcontrol/list-runs",
    "/v1/fleet/%2e%2e/control/list-runs",
    "/v1/fleet%2F..%2Fcontrol%2Flist-runs",
    "/v1//control/list-runs",
    "//v1/control/list-runs",
    "/V1/CONTROL/list-runs",
    "/v1/Control/list-runs",
    "/v1/FLEET/pull-messages",
    "/v1/fleet/pull-messages/../../control/list-runs",
    "/v1/fleet/pull-messages?next=/v1/control/list-runs",
    "/v1/fleet/pull%2Dmessages",
)
"""Flower's Control and Runtime APIs, its documentation, and tricks that reach them on servers that
decode or normalise paths: all must be refused."""
PATHS = (FLEET, *REFUSED)
PLAIN = "plain " + FLEET
"""The Fleet path in plain HTTP, to the TLS port."""


def _post(connection: http.client.HTTPConnection, path: str) -> int | str:
    try:
        connection.request("POST", path, body=b"", headers={"content-type": "application/protobuf"})
        return connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def _tls(host: str, port: int, name: str, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    """A connection to the address, with the certificate checked for the name the clients use."""
    connection = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    connection.sock = context.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=name)
    return connection


def probe(host: str, port: int, name: str, ca: str) -> dict[str, int | str]:
    context = ssl.create_default_context(cafile=ca)
    answers: dict[str, int | str] = {}
    for path in PATHS:
        try:
            connection = _tls(host, port, name, context)
        except OSError as exc:
            answers[path] = type(exc).__name__
            continue
        answers[path] = _post(connection, path)
    answers[PLAIN] = _post(http.client.HTTPConnection(host, port, timeout=10), FLEET)
    return answers


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])))
