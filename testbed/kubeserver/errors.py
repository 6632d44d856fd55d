"""
Kubernetes API errors, answered as ``Status`` objects.

kmock renders :class:`kmock.KubernetesError` as a ``Status`` body with the HTTP code
of the error; these factories fill in the ``reason`` and ``message`` strings that
clients branch on (kopf maps 409 and 422 to its own exceptions, kubectl prints the
message), worded as a real API server words them.
"""

from typing import Any

import kmock


def _error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def not_found(resource: str, name: str) -> kmock.KubernetesError:
    return _error(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)


def unknown_resource(path: str) -> kmock.KubernetesError:
    return _error(404, "NotFound", f"the server could not find the requested resource ({path})")


def already_exists(resource: str, name: str) -> kmock.KubernetesError:
    return _error(409, "AlreadyExists", f'{resource} "{name}" already exists', name=name, kind=resource)


def conflict(resource: str, name: str, why: str) -> kmock.KubernetesError:
    message = f'Operation cannot be fulfilled on {resource} "{name}": {why}'
    return _error(409, "Conflict", message, name=name, kind=resource)


def invalid(resource: str, name: str, why: str) -> kmock.KubernetesError:
    return _error(422, "Invalid", f'{resource} "{name}" is invalid: {why}', name=name, kind=resource)


def forbidden(resource: str, name: str, why: str) -> kmock.KubernetesError:
    return _error(403, "Forbidden", f'{resource} "{name}" is forbidden: {why}', name=name, kind=resource)


def bad_request(why: str) -> kmock.KubernetesError:
    return _error(400, "BadRequest", why)


def method_not_allowed(why: str) -> kmock.KubernetesError:
    return _error(405, "MethodNotAllowed", why)


def unsupported_media_type(content_type: str) -> kmock.KubernetesError:
    return _error(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")


def expired(why: str) -> kmock.KubernetesError:
    return _error(410, "Expired", why)


def status_body(error: kmock.KubernetesError) -> dict[str, Any]:
    """The ``Status`` object of an error, for HTTP bodies and for watch ``ERROR`` events."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "details": error.details or {},
        "code": error.status,
    }
