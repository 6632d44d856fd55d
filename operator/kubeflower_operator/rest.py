"""JSON requests to the Kubernetes API through the client's `ApiClient`, without its typed API classes.

The operator writes its children and its Lease as plain dicts and reads answers as JSON. The
Kubernetes client's typed API classes (`AppsV1Api`, `CoreV1Api`, ...) would import hundreds of
pydantic models and wrap every one of their methods in `validate_call` on first use: about 28 MB of
the operator's memory (a third of it), spent on checking dicts the API server checks anyway.
`ApiClient` still does what matters: the kubeconfig or service account, TLS, the bearer token and
its refresh, the connection pool, `ApiException` for every error answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
Document = dict[str, Any]


def path(group: str, version: str, plural: str, namespace: str, name: str | None = None) -> str:
    """A namespaced object's (or collection's) URL path; the core group ("") lives under /api."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    collection = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{collection}/{quote(name, safe='')}" if name is not None else collection


def request(
    api_client: ApiClient,
    method: str,
    url_path: str,
    body: Document | None = None,
    *,
    query: list[tuple[str, str]] | None = None,
    content_type: str = JSON,
    timeout: float | tuple[float, float] | None = None,
) -> Document:
    """Send one request; the answer's JSON document. Any answer outside 2xx raises `ApiException`
    (with the answer's body, as the typed classes do), so callers handle 404/409/422 as before."""
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api_client.param_serialize(
        method=method,
        resource_path=url_path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    method_, url, header_params, payload, _ = serialized
    response = api_client.call_api(method_, url, header_params=header_params, body=payload, _request_timeout=timeout)
    data: bytes = response.response.data or b""  # the body, read whole (`RESTResponse.read` is untyped)
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=data.decode("utf-8", "replace"), data=None)
    answer: Document = json.loads(data) if data else {}
    return answer
