"""Services: a cluster IP each, their names in every pod's /etc/hosts, and a proxy to their endpoints.

What kube-proxy and cluster DNS do, as far as the pods can tell:

* A Service gets a cluster IP (from the top of the pods' /24; written to `spec.clusterIP`, as the
  API server does on creation). The IPs live on `eth0` of one extra namespace, the "service
  network", where a user-space proxy (kube-proxy's old userspace mode) listens on each Service
  port while the Service has ready endpoints, and relays each connection to one of them: a ready,
  not terminating pod that the selector matches, at its `targetPort` (a number, or a container
  port's name, looked up in that pod). Without ready endpoints nothing listens: connections are
  refused, as kube-proxy's REJECT rule does. Headless Services (`clusterIP: None`) get no IP;
  their names resolve to the ready pods' own addresses.
* There is no DNS server: each pod's /etc/hosts (kubelet-managed in a cluster) also holds every
  Service's names -- `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc`, `<svc>.<ns>`, and `<svc>` for
  the pod's own namespace -- and is rewritten in place when Services come and go.

* NetworkPolicies (`policies`) are enforced at the proxy, on the ingress of the endpoint pod: a
  connection is relayed only to an endpoint whose policies admit the client pod's address, and
  reset when none does (a CNI would drop the packets: the client would time out instead).

NodePort and LoadBalancer Services are served as ClusterIP ones (no node ports); UDP ports,
session affinity, and policies for traffic to a pod's own address are not modelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from typing import Any

from testbed.podrunner import policies
from testbed.podrunner.labels import matches
from testbed.podrunner.netns import Netns
from testbed.podrunner.podspec import ConfigError, container_port

Obj = dict[str, Any]
log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
HOSTS_HEADER = """# Kubernetes-managed hosts file (testbed/podrunner: the Services' names too, no cluster DNS).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""

Endpoint = tuple[str, int]
Key = tuple[str, int]
"""(cluster IP, port)."""
Route = tuple[str, int, policies.Admission]
"""An endpoint (address, target port), and who its NetworkPolicies admit."""


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def endpoints(service: Obj, pods: list[Obj]) -> dict[int, list[Endpoint]]:
    """Service port -> the ready pods' (address, target port)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    result: dict[int, list[Endpoint]] = {int(p["port"]): [] for p in spec.get("ports") or []}
    if not selector:
        return result  # a Service without selector has Endpoints written by hand: not modelled
    namespace = service["metadata"].get("namespace")
    for pod in pods:
        meta = pod["metadata"]
        address = (pod.get("status") or {}).get("podIP")
        if meta.get("namespace") != namespace or meta.get("deletionTimestamp") or not address or not pod_ready(pod):
            continue
        if not matches(selector, meta.get("labels") or {}):
            continue
        for port in spec.get("ports") or []:
            with contextlib.suppress(ConfigError):  # a pod without that named port is no endpoint of it
                result[int(port["port"])].append((address, container_port(pod, port.get("targetPort", port["port"]))))
    return result


def names(service: Obj, namespace_of_pod: str) -> list[str]:
    meta = service["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    found = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    return found + ([name] if namespace == namespace_of_pod else [])


def hosts_file(pod_address: str, hostname: str, pod_namespace: str, services: list[Obj], pods: list[Obj]) -> str:
    lines = [HOSTS_HEADER.rstrip("\n"), f"{pod_address}\t{hostname}", "# Services"]
    for service in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        if service["metadata"].get("deletionTimestamp"):
            continue
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        if cluster_ip == "None":
            addresses = sorted({a for eps in endpoints(service, pods).values() for a, _ in eps})
        else:
            addresses = [cluster_ip] if cluster_ip else []
        for address in addresses:
            lines.append(f"{address}\t{' '.join(names(service, pod_namespace))}")
    return "\n".join(lines) + "\n"


class Proxy:
    """The user-space proxy, in its own thread, inside the service network namespace."""

    def __init__(self, netns: Netns) -> None:
        self.netns = netns
        self.table: dict[Key, list[Route]] = {}
        self.listeners: dict[Key, asyncio.AbstractServer] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.errors: list[str] = []
        self.refused: list[tuple[str, Key]] = []
        """(client address, (cluster IP, port)) of the connections that NetworkPolicies refused."""
        self.thread = threading.Thread(target=self._run, name=f"proxy-{netns.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        with self.netns.entered():  # this thread, and every socket it makes, lives in the namespace
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(self.ready.set)
            self.loop.run_forever()
            for listener in self.listeners.values():
                listener.close()
            relays = asyncio.all_tasks(self.loop)
            for task in relays:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*relays, return_exceptions=True))
            self.loop.close()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def update(self, table: dict[Key, list[Route]]) -> None:
        """Listen on exactly the (cluster IP, port)s that have endpoints; relay to those."""
        future = asyncio.run_coroutine_threadsafe(self._update(dict(table)), self.loop)
        future.result(10)

    async def _update(self, table: dict[Key, list[Route]]) -> None:
        self.table = table
        for key in list(self.listeners):
            if not table.get(key):
                self.listeners.pop(key).close()  # open connections go on, as with conntrack
        for key, eps in table.items():
            if eps and key not in self.listeners:
                try:
                    server = await asyncio.start_server(
                        lambda r, w, key=key: self._relay(key, r, w), host=key[0], port=key[1], reuse_address=True
                    )
                except OSError as exc:
                    self.errors.append(f"listen on {key}: {exc}")
                    continue
                self.listeners[key] = server

    async def _relay(self, key: Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[0]
        routes = [r for r in self.table.get(key) or [] if policies.admits(r[2], client)]
        if not routes:
            if self.table.get(key):
                self.refused.append((client, key))
                log.info("a NetworkPolicy refuses %s a connection to %s:%d", client, *key)
            writer.transport.abort()
            return
        address, port, _ = random.choice(routes)
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError):
            writer.transport.abort()  # the client sees a reset, as after a REJECT
            return
        writers = (writer, upstream_writer)

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(256 * 1024):
                    target.write(data)
                    await target.drain()
                if target.can_write_eof():
                    target.write_eof()  # a half-close goes through, as it does through NAT
            except (OSError, RuntimeError):
                for w in writers:
                    w.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        for w in writers:
            w.close()


class ServiceNetwork:
    """The cluster IPs (allocation, `spec.clusterIP`) and the proxy that serves them."""

    def __init__(self, kube: Any, network: Any) -> None:
        self.kube, self.network = kube, network
        self.netns = network.add("service-network")
        self.proxy = Proxy(self.netns)
        self.proxy.start()
        self.addresses: dict[str, str] = {}
        """Service uid -> its cluster IP."""
        self._table: dict[Key, list[Route]] | None = None

    def sync(self, services: list[Obj], pods: list[Obj], network_policies: list[Obj], namespaces: list[Obj]) -> None:
        live = set()
        for service in services:
            meta, spec = service["metadata"], service.get("spec") or {}
            if spec.get("clusterIP") == "None":
                continue
            live.add(meta["uid"])
            if meta["uid"] in self.addresses:
                continue
            if spec.get("clusterIP"):
                raise ValueError(
                    f"Service {meta.get('namespace')}/{meta['name']} asks for clusterIP {spec['clusterIP']}: "
                    "not modelled (cluster IPs are allocated by the runner)"
                )
            address = self.network.allocate("service")
            self.network.add_address(self.netns, address)
            self.addresses[meta["uid"]] = address
            try:
                self.kube.patch(
                    "v1",
                    "services",
                    meta.get("namespace"),
                    meta["name"],
                    {"spec": {"clusterIP": address, "clusterIPs": [address]}},
                )
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
        for uid in set(self.addresses) - live:
            address = self.addresses.pop(uid)
            self.network.remove_address(self.netns, address)
            self.network.release(address, "service")
        table: dict[Key, list[Route]] = {}
        by_address = {
            (p.get("status") or {}).get("podIP"): p for p in pods if not p["metadata"].get("deletionTimestamp")
        }
        labels = policies.namespace_labels(namespaces)
        for service in services:
            address = self.addresses.get(service["metadata"]["uid"])
            if (
                address
                and (service.get("spec") or {}).get("clusterIP") == address
                and not service["metadata"].get("deletionTimestamp")
            ):
                for port, eps in endpoints(service, pods).items():
                    table[(address, port)] = [
                        (ip, target, policies.admission(network_policies, labels, pods, by_address[ip], target))
                        for ip, target in eps
                    ]
        if table != self._table:
            self.proxy.update(table)
            self._table = table

    def close(self) -> None:
        self.proxy.stop()
        self.network.remove(self.netns)
