"""From a Pod object to what its containers run: the kubelet's reading of the pod spec, as pure functions.

* the command line: `command` (or the image's ENTRYPOINT) then `args` (or, without `command`,
  the image's CMD), with `$(VAR)` references expanded from the container's environment;
* the environment: the image's ENV, HOSTNAME, then `envFrom` and `env` in order, with the
  downward API (`fieldRef`, `resourceFieldRef`), `configMapKeyRef` and `secretKeyRef` resolved and
  `$(VAR)` expanded as the kubelet does;
* the user, group and supplementary groups (runAsUser, runAsGroup, fsGroup,
  supplementalGroups; the container's securityContext over the pod's, over the image's USER),
  `runAsNonRoot`, `readOnlyRootFilesystem`, `allowPrivilegeEscalation` and dropped capabilities.

A spec that a kubelet would refuse raises `ConfigError` (the container then waits with
CreateContainerConfigError); a spec that uses what this runner does not model raises
`Unsupported`, so that a test never passes on something that was silently skipped.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.podrunner.images import Image

Obj = dict[str, Any]
Lookup = Callable[[str, str, str], Obj | None]
"""(plural, namespace, name) -> the ConfigMap or Secret, or None."""

NODE_NAME = "podrunner"
NODE_CPUS = 2
NODE_MEMORY = 8 * 1024**3
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The kubelet would not create this container (CreateContainerConfigError)."""


class Unsupported(Exception):
    """The spec uses something this runner does not model."""


@dataclass
class Launch:
    """Everything the sandbox needs to start one container."""

    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: list[int]
    workdir: str
    read_only_root: bool = False
    no_new_privileges: bool = False
    drop_capabilities: bool = False
    mounts: list[Obj] = field(default_factory=list)
    """[{name, mountPath, readOnly}] in the container's order."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, the rest stays."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REFERENCE.sub(replace, text)


def _field(pod: Obj, path: str) -> str:
    meta = pod.get("metadata") or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName", NODE_NAME),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": (pod.get("status") or {}).get("podIP", ""),
        "status.podIPs": (pod.get("status") or {}).get("podIP", ""),
        "status.hostIP": (pod.get("status") or {}).get("hostIP", ""),
    }
    if path not in values:
        raise ConfigError(f"fieldRef {path!r} is not supported by the downward API")
    return str(values[path])


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    if not m or m.group(2) not in _UNITS:
        raise ConfigError(f"bad quantity {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _resource_field(container: Obj, ref: Obj) -> str:
    resources = container.get("resources") or {}
    kind, _, name = ref["resource"].partition(".")
    default = {"cpu": NODE_CPUS, "memory": NODE_MEMORY}.get(name)
    if kind not in ("limits", "requests") or default is None:
        raise Unsupported(f"resourceFieldRef {ref['resource']!r}")
    raw = (resources.get(kind) or {}).get(name) or (
        (resources.get("limits") or {}).get(name) if kind == "requests" else None
    )
    value = quantity(raw) if raw is not None else (0 if kind == "requests" else default)
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(value / divisor))


def _key_ref(ref: Obj, plural: str, namespace: str, lookup: Lookup) -> str | None:
    obj = lookup(plural, namespace, ref["name"])
    data = (obj or {}).get("data") or {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f"{plural} {ref['name']!r}: key {ref['key']!r} not found")
    value = data[ref["key"]]
    return base64.b64decode(value).decode() if plural == "secrets" else str(value)


def environment(pod: Obj, container: Obj, image: Image, lookup: Lookup) -> dict[str, str]:
    namespace = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {**image.env, "HOSTNAME": pod["metadata"]["name"]}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for key, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            if key in source:
                obj = lookup(plural, namespace, source[key]["name"])
                if obj is None and not source[key].get("optional"):
                    raise ConfigError(f"{plural} {source[key]['name']!r} not found")
                for name, value in ((obj or {}).get("data") or {}).items():
                    env[prefix + name] = base64.b64decode(value).decode() if plural == "secrets" else str(value)
    for var in container.get("env") or []:
        if "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = _field(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[var["name"]] = _resource_field(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            key = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
            value = _key_ref(source[key], "configmaps" if key == "configMapKeyRef" else "secrets", namespace, lookup)
            if value is not None:
                env[var["name"]] = value
        else:
            raise Unsupported(f"env {var['name']}: valueFrom {sorted(source)}")
    return env


def command_line(container: Obj, image: Image, env: dict[str, str]) -> list[str]:
    if container.get("command"):
        argv = list(container["command"]) + list(container.get("args") or [])
    else:
        argv = list(image.entrypoint) + list(container.get("args") or image.cmd)
    argv = [expand(str(a), env) for a in argv]
    if not argv:
        raise ConfigError("no command specified")
    return argv


def launch(pod: Obj, container: Obj, image: Image, lookup: Lookup) -> Launch:
    spec = pod.get("spec") or {}
    pod_security = spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    for key in ("privileged", "seLinuxOptions", "windowsOptions", "appArmorProfile", "procMount"):
        if security.get(key):
            raise Unsupported(f"securityContext.{key}")
    if container.get("stdin") or container.get("tty"):
        raise Unsupported("stdin/tty")

    def setting(key: str, default: Any) -> Any:
        return security.get(key, pod_security.get(key, default))

    uid = int(setting("runAsUser", image.user))
    # Without runAsGroup: the user's group in the image (its USER line), else root's group.
    gid = int(setting("runAsGroup", image.group if uid == image.user else 0))
    if setting("runAsNonRoot", False) and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    groups = sorted(
        {gid, *(int(g) for g in pod_security.get("supplementalGroups") or [])}
        | ({int(pod_security["fsGroup"])} if "fsGroup" in pod_security else set())
    )
    capabilities = security.get("capabilities") or {}
    if capabilities.get("add"):
        raise Unsupported("capabilities.add")
    env = environment(pod, container, image, lookup)
    volumes = {v["name"] for v in spec.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise ConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise Unsupported("volumeMounts[].subPath")
        mounts.append({"name": mount["name"], "mountPath": mount["mountPath"], "readOnly": bool(mount.get("readOnly"))})
    drop = [c.upper() for c in capabilities.get("drop") or []]
    if drop and drop != ["ALL"]:
        raise Unsupported(f"capabilities.drop {drop} (only ALL)")
    return Launch(
        argv=command_line(container, image, env),
        env=env,
        uid=uid,
        gid=gid,
        groups=groups,
        workdir=container.get("workingDir") or image.workdir,
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        drop_capabilities=drop == ["ALL"],
        mounts=mounts,
    )


def container_port(pod: Obj, port: int | str) -> int:
    """A port number, or a named port of one of the pod's containers, as a number."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    raise ConfigError(f"no container port named {port!r}")
