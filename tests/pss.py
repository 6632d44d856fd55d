"""The Kubernetes "restricted" Pod Security Standard (v1.32), as checks on a pod spec.

Mirrors the policy's controls: https://kubernetes.io/docs/concepts/security/pod-security-standards/
Returns the violated controls, so a test failure names what broke.
"""

from __future__ import annotations

from typing import Any

_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    found = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            found.append(f"host namespaces: {flag}")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            found.append(f"volume types: {volume['name']} uses {kinds - _ALLOWED_VOLUMES}")
    if pod_sc.get("runAsUser") == 0:
        found.append("running as non-root user: pod runAsUser 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    containers = (pod_spec.get("initContainers") or []) + pod_spec["containers"]
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            found.append(f"privileged: {name}")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {name} must set allowPrivilegeEscalation=false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"capabilities: {name} must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"capabilities: {name} adds {caps['add']}")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            found.append(f"running as non-root: {name}")
        if sc.get("runAsUser") == 0:
            found.append(f"running as non-root user: {name}")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccomp: {name} has {seccomp}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"host ports: {name}")
    return found
