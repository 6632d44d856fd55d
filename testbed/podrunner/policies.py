"""NetworkPolicy ingress rules, as the Service proxy enforces them.

A pod that no Ingress policy selects admits every source. A pod that some do admits a connection
to a port when one of their ingress rules allows that port (a number, a range with `endPort`, or
a container port's name) from that source: a `podSelector` (in the policy's namespace), a
`namespaceSelector` (namespaces carry `kubernetes.io/metadata.name`, as the API server sets it),
both, or an `ipBlock`; a rule without `from` admits every source. Egress rules are not
enforced, and neither is traffic to a pod's own address that bypasses the Services (see
`services`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from testbed.podrunner.labels import matches
from testbed.podrunner.podspec import ConfigError, container_port

Obj = dict[str, Any]
Admission = tuple[frozenset[str], tuple[tuple[str, tuple[str, ...]], ...]] | None
"""None: every source; else (pod addresses, (cidr, excepted cidrs) blocks)."""


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A NetworkPolicy's selector: empty selects everything (unlike a Service's)."""
    return not selector or matches(selector, labels)


def _ingress(policy: Obj) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    return "Ingress" in types


def _port_allowed(ports: list[Obj] | None, target: Obj, port: int) -> bool:
    if not ports:
        return True
    for rule in ports:
        if rule.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in rule:
            return True
        try:
            first = container_port(target, rule["port"])
        except ConfigError:
            continue
        if first <= port <= int(rule.get("endPort", first)):
            return True
    return False


def _peer(peer: Obj, policy_namespace: str, pod: Obj, namespaces: dict[str, dict[str, str]]) -> bool:
    meta = pod["metadata"]
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespaces.get(meta.get("namespace", ""), {})):
            return False
    elif meta.get("namespace") != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], meta.get("labels") or {})


def admission(
    policies: list[Obj], namespaces: dict[str, dict[str, str]], pods: list[Obj], target: Obj, port: int
) -> Admission:
    """Who may connect to `target`'s `port`: None (anyone) or the admitted addresses and blocks."""
    meta = target["metadata"]
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == meta.get("namespace")
        and _ingress(p)
        and selects((p.get("spec") or {}).get("podSelector"), meta.get("labels") or {})
    ]
    if not selecting:
        return None
    addresses: set[str] = set()
    blocks: list[tuple[str, tuple[str, ...]]] = []
    for policy in selecting:
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            if not _port_allowed(rule.get("ports"), target, port):
                continue
            if not rule.get("from"):
                return None
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    blocks.append((peer["ipBlock"]["cidr"], tuple(peer["ipBlock"].get("except") or ())))
                    continue
                for pod in pods:
                    address = (pod.get("status") or {}).get("podIP")
                    if address and _peer(peer, policy["metadata"].get("namespace", ""), pod, namespaces):
                        addresses.add(address)
    return frozenset(addresses), tuple(sorted(blocks))


def admits(admitted: Admission, address: str) -> bool:
    if admitted is None:
        return True
    addresses, blocks = admitted
    if address in addresses:
        return True
    ip = ipaddress.ip_address(address)
    return any(
        ip in ipaddress.ip_network(cidr) and not any(ip in ipaddress.ip_network(e) for e in excepted)
        for cidr, excepted in blocks
    )


def namespace_labels(namespaces: list[Obj]) -> dict[str, dict[str, str]]:
    return {
        ns["metadata"]["name"]: {
            **(ns["metadata"].get("labels") or {}),
            "kubernetes.io/metadata.name": ns["metadata"]["name"],
        }
        for ns in namespaces
    }
