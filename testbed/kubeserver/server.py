"""
The HTTP face of the server: kmock's ``KubernetesEmulator`` with the semantics of a real API server.

What is kept from kmock: the aiohttp request handling and response rendering (JSON
bodies and streamed watches), the request DSL (``emulator['get', ...] << 500`` still
overrides any default answer), the request records, the ``Status`` error rendering,
the routing of the discovery endpoints, and the object store (``emulator.objects``
keeps every version of every object). What is replaced: the URL parsing, the
discovery documents, and every read and write of objects, which go to
:class:`~testbed.kubeserver.store.Store` instead of kmock's handlers (see the package
docstring for why). This touches kmock internals: it is written for kmock==0.8 exactly.
"""

import base64
import copy
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, rendering  # the request class and the handler base: pinned kmock

from . import discovery, errors, patching, paths, scale, selectors, tables, watch
from .requestlog import RequestLog
from .resources import Registry, ResourceSpec
from .store import Store, relabel

logger = logging.getLogger(__name__)

TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    server_address: str  # host:port, announced in /api
    request_log: RequestLog = attrs.field(factory=RequestLog)
    registry: Registry = attrs.field(factory=Registry, init=False)
    events: watch.EventLog = attrs.field(factory=watch.EventLog, init=False)
    store: Store = attrs.field(init=False)
    failures: list[Exception] = attrs.field(factory=list, init=False)  # server bugs (500s)
    # Admission rules a test sets (`KubeServer.admission`): (resource as `plural.group`, the object
    # to store) -> why it is refused, or None. A real API server's validation and admission refuse
    # objects for reasons these tests need to provoke (an invalid field, a quota, a policy).
    admission: list[Callable[[str, dict[str, Any]], str | None]] = attrs.field(factory=list, init=False)
    _request_ids: Iterator[int] = attrs.field(factory=itertools.count, init=False)

    def __attrs_post_init__(self) -> None:
        # kmock routes discovery, LIST/WATCH/FETCH/CREATE/UPDATE(PATCH)/DELETE to the _serve_* methods
        # overridden below; it has no action for PUT.
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.store = Store(self._objects, self.registry, self.events)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """The aiohttp entry point: parse the request (kmock's parsing fails on namespaces) and serve it."""
        body = await raw_request.read()
        self.request_log.record(raw_request.method, raw_request.path, raw_request.query_string)
        request = _parse_request(raw_request, body, id=next(self._request_ids))
        # kmock matches a request to its reactions by scanning every request it holds: keep only
        # those in flight, or each request costs more than the last (quadratic over a benchmark).
        self._requests.append(request)
        error: Exception
        try:
            return await self._handle(request)
        except rendering.StreamingError as e:  # kmock wraps the failures of streamed answers
            streamed: aiohttp.web.StreamResponse = e.args[0]
            error = e.__cause__ if isinstance(e.__cause__, Exception) else e
            if streamed.prepared:  # too late for an error answer: the watch has started
                self._record_failure(error)
                return streamed
        except Exception as e:
            error = e
        finally:
            self._requests.remove(request)
        if not isinstance(error, kmock.KubernetesError):
            self._record_failure(error)
        return await self._render_error(error)

    def _record_failure(self, error: Exception) -> None:
        logger.error("The API test server failed on a request", exc_info=error)
        self.failures.append(error)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it writes to kmock's objects before dispatching;
        # here the store does all the writing from the _serve_* methods.
        return await apps.RawHandler._handle(self, request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            exc = kmock.KubernetesError(status=500, reason="InternalError", message=repr(exc))
        return aiohttp.web.json_response(errors.status_body(exc), status=exc.status)

    # Discovery.

    async def _serve_root(self, request: rendering.Request) -> Any:
        group_versions = {f"/apis/{s.group}/{s.version}" for s in self.registry if s.group}
        groups = {f"/apis/{s.group}" for s in self.registry if s.group}
        return {"paths": sorted({"/api", "/api/v1", "/apis", "/version"} | groups | group_versions)}

    async def _serve_server_version(self, request: rendering.Request) -> Any:
        return discovery.KUBERNETES_VERSION

    async def _serve_api(self, request: rendering.Request) -> Any:
        return discovery.api_versions(self.server_address)

    async def _serve_apis(self, request: rendering.Request) -> Any:
        return discovery.api_group_list(self.registry)

    async def _serve_group(self, request: rendering.Request) -> Any:
        assert request.resource is not None
        document = discovery.api_group(self.registry, request.resource.group or "")
        if document is None:
            raise errors.unknown_resource(request.url.path)
        return document

    async def _serve_version(self, request: rendering.Request) -> Any:
        assert request.resource is not None
        document = discovery.api_resource_list(
            self.registry, request.resource.group or "", request.resource.version or ""
        )
        if document is None:
            raise errors.unknown_resource(request.url.path)
        return document

    # Objects.

    async def _serve_list(self, request: rendering.Request) -> Any:
        spec = self._spec(request)
        items = self.store.select(spec, _selector(request))
        resource_version = self.store.resource_version
        items, continue_token = _paginate(items, request.params)
        table_version = tables.table_version(_header(request, "Accept"))
        if table_version:
            return tables.render(
                spec,
                items,
                api_version=table_version,
                resource_version=resource_version,
                include_object=request.params.get("includeObject", ""),
                continue_token=continue_token,
            )
        metadata = {"resourceVersion": resource_version, **({"continue": continue_token} if continue_token else {})}
        return {"kind": spec.list_kind, "apiVersion": spec.api_version, "metadata": metadata, "items": items}

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        spec = self._spec(request)
        assert request.name is not None
        obj = self.store.get(spec, request.namespace, request.name)
        if request.subresource == "scale" and spec.scale is not None:
            return scale.scale_of(spec, obj)
        self._check_subresource(spec, request)
        table_version = tables.table_version(_header(request, "Accept"))
        if table_version:
            return tables.render(
                spec,
                [obj],
                api_version=table_version,
                resource_version=obj["metadata"]["resourceVersion"],
                include_object=request.params.get("includeObject", ""),
            )
        return obj

    async def _serve_create(self, request: rendering.Request) -> Any:
        spec = self._spec(request)
        if request.subresource is not None:
            raise errors.method_not_allowed(f"cannot create {request.subresource} of {spec.qualified}")
        body = _json_body(request)
        self._admit(spec, body)
        return rendering.Response(status=201, payload=self.store.create(spec, request.namespace, body))

    def _admit(self, spec: ResourceSpec, obj: Any) -> None:
        for rule in list(self.admission):
            why = rule(spec.qualified, obj) if isinstance(obj, dict) else None
            if why is not None:
                raise errors.invalid(spec.qualified, str(obj.get("metadata", {}).get("name", "")), why)

    async def _serve_update(self, request: rendering.Request) -> Any:
        """PATCH: the patch is applied to the whole object (or to its Scale), then stored as a PUT would be."""
        spec = self._spec(request)
        content_type = _content_type(request)
        if content_type not in patching.PATCH_TYPES:
            raise errors.unsupported_media_type(content_type)
        assert request.name is not None
        name = request.name

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            return patching.apply(content_type, obj, request.data, what=spec.qualified, name=name)

        return self._write(spec, request, change)

    async def _serve_replace(self, request: rendering.Request) -> Any:
        spec = self._spec(request)
        if request.name is None:
            raise errors.method_not_allowed(f"cannot replace the whole collection of {spec.qualified}")
        body = _json_body(request)
        if request.subresource is None:
            self._admit(spec, body)
        return self._write(spec, request, lambda _: copy.deepcopy(body))

    def _write(self, spec: ResourceSpec, request: rendering.Request, change: Callable[[Any], Any]) -> Any:
        assert request.name is not None
        if request.subresource == "scale" and spec.scale is not None:
            new = self.store.update(
                spec,
                request.namespace,
                request.name,
                None,
                lambda obj: scale.apply_scale(spec, obj, change(scale.scale_of(spec, obj))),
            )
            return scale.scale_of(spec, new)
        self._check_subresource(spec, request)
        return self.store.update(spec, request.namespace, request.name, request.subresource, change)

    async def _serve_delete(self, request: rendering.Request) -> Any:
        spec = self._spec(request)
        if request.subresource is not None:
            raise errors.method_not_allowed(f"cannot delete {request.subresource} of {spec.qualified}")
        assert request.name is not None
        body = _json_body(request)
        options = dict(body) if isinstance(body, dict) else {}
        if "propagationPolicy" in request.params:
            options["propagationPolicy"] = request.params["propagationPolicy"]
        return self.store.delete(spec, request.namespace, request.name, options)

    # kmock serves whatever this returns; its own version is a generator, this one adds the content type.
    async def _serve_watch(self, request: rendering.Request) -> Any:  # type: ignore[override]
        spec = self._spec(request)
        selector = _selector(request)
        params = request.params
        initial_events = params.get("sendInitialEvents") in TRUE
        resource_version = params.get("resourceVersion", "")
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            since = int(resource_version) if resource_version not in ("", "0") else None
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion or timeoutSeconds: {params}") from None
        # As a real server: with no resourceVersion (or "0"), or when asked to, start with the current
        # objects as ADDED events, then the changes after them. Reading both here with no await
        # in between loses no write.
        initial = self.store.select(spec, selector) if since is None or initial_events else []
        if since is None or initial_events:
            since = int(self.store.resource_version)
        stream = self._watch_stream(
            spec,
            request,
            initial,
            since,
            selector,
            timeout,
            bookmark=initial_events and params.get("allowWatchBookmarks") in TRUE,
        )
        return rendering.Response(headers={"Content-Type": "application/json"}, payload=stream)

    async def _watch_stream(
        self,
        spec: ResourceSpec,
        request: rendering.Request,
        initial: list[dict[str, Any]],
        since: int,
        selector: selectors.Selector,
        timeout: float | None,
        bookmark: bool,
    ) -> AsyncIterator[Any]:
        yield b""  # send the headers now: clients wait for them before they read events
        table_version = tables.table_version(_header(request, "Accept"))
        include_object = request.params.get("includeObject", "")
        first = True

        def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
            nonlocal first
            obj = relabel(spec, obj)
            if table_version:  # a real server sends the column definitions in the first event only
                obj = tables.render(
                    spec,
                    [obj],
                    api_version=table_version,
                    include_object=include_object,
                    resource_version=obj["metadata"]["resourceVersion"],
                    with_columns=first,
                )
            first = False
            return {"type": event_type, "object": obj}

        for obj in initial:
            yield event(watch.ADDED, obj)
        if bookmark:
            yield {
                "type": "BOOKMARK",
                "object": {
                    "kind": spec.kind,
                    "apiVersion": spec.api_version,
                    "metadata": {"resourceVersion": str(since), "annotations": {"k8s.io/initial-events-end": "true"}},
                },
            }
        try:
            async for event_type, obj in watch.follow(
                self.events, key=spec.storage_key, since=since, matches=selector.matches, timeout=timeout
            ):
                yield event(event_type, obj)
        except kmock.KubernetesError as e:  # 410 Expired: the client must list again
            yield {"type": "ERROR", "object": errors.status_body(e)}

    # Helpers.

    def _spec(self, request: rendering.Request) -> ResourceSpec:
        resource = request.resource
        spec = (
            None
            if resource is None
            else self.registry.get(resource.group or "", resource.version or "", resource.plural or "")
        )
        if spec is None:
            raise errors.unknown_resource(request.url.path)
        if not spec.namespaced and request.namespace is not None:
            raise errors.unknown_resource(request.url.path)
        if request.params.get("dryRun"):
            raise errors.bad_request("dryRun is not supported by this test server")
        return spec

    def _check_subresource(self, spec: ResourceSpec, request: rendering.Request) -> None:
        if request.subresource is not None and not (request.subresource == "status" and spec.status):
            raise errors.unknown_resource(request.url.path)


def _parse_request(raw_request: aiohttp.web.BaseRequest, body: bytes, *, id: int) -> rendering.Request:
    """A kmock request with the Kubernetes fields parsed by :func:`paths.parse_path` and JSON data."""
    path = paths.parse_path(raw_request.path)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    params = dict(raw_request.query)
    return rendering.Request(
        id=id,
        raw_request=raw_request,
        url=raw_request.url,
        method=raw_request.method,
        params=params,
        headers=dict(raw_request.headers),
        cookies=dict(raw_request.cookies),
        body=body,
        text=body.decode("utf-8", "replace"),
        data=data,
        action=_action(raw_request.method, path, params),
        resource=None if path is None else kmock.resource(group=path.group, version=path.version, plural=path.plural),
        namespace=None if path is None else path.namespace,
        name=None if path is None else path.name,
        subresource=None if path is None else path.subresource,
    )


def _action(method: str, path: paths.ApiPath | None, params: Mapping[str, str]) -> kmock.action | None:
    if path is None or path.plural is None:
        return None
    if method == "GET":
        return (
            kmock.action.WATCH
            if params.get("watch") in TRUE
            else kmock.action.FETCH
            if path.name
            else kmock.action.LIST
        )
    if method == "POST" and path.name is None:
        return kmock.action.CREATE
    if method == "PATCH" and path.name is not None:
        return kmock.action.UPDATE
    if method == "DELETE" and path.name is not None:
        return kmock.action.DELETE
    return None


def _header(request: rendering.Request, name: str) -> str:
    return next((value for key, value in request.headers.items() if key.lower() == name.lower()), "")


def _content_type(request: rendering.Request) -> str:
    return _header(request, "Content-Type").split(";")[0].strip()


def _json_body(request: rendering.Request) -> Any:
    """
    The JSON body of a create, replace or delete request.

    kubectl's typed clients (``kubectl create namespace|configmap|deployment ...``, ``kubectl run``)
    send protobuf, which cannot be decoded without the Go types: they are answered 415.
    """
    if request.body and _content_type(request) not in ("application/json", ""):
        raise errors.unsupported_media_type(_content_type(request))
    return request.data


def _selector(request: rendering.Request) -> selectors.Selector:
    return selectors.Selector.parse(
        namespace=request.namespace,
        name=request.name,  # watching a single object: GET .../plural/name?watch=true
        labels=request.params.get("labelSelector", ""),
        fields=request.params.get("fieldSelector", ""),
    )


def _paginate(items: list[dict[str, Any]], params: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
    """
    ``limit`` and ``continue``: the token is the last (namespace, name) served.

    Unlike a real server, the next pages come from the current state, not a snapshot.
    """
    if params.get("continue"):
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(params["continue"])))
        except ValueError:
            raise errors.bad_request("invalid continue token") from None
        items = [obj for obj in items if _position(obj) > after]
    limit = params.get("limit", "")
    if limit.isdigit() and 0 < int(limit) < len(items):
        items = items[: int(limit)]
        return items, base64.urlsafe_b64encode(json.dumps(_position(items[-1])).encode()).decode()
    return items, ""


def _position(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
