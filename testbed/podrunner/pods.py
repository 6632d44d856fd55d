"""The workload controllers: Pods from Deployments (through ReplicaSets) and StatefulSets, and their status.

As kube-controller-manager does, in outline:

* A Deployment owns one ReplicaSet per pod template, `<deployment>-<pod-template-hash>`; the
  ReplicaSet owns its pods, `<replicaset>-<5 random characters>` (generateName). A new template
  scales the old ReplicaSets to zero; with `strategy: Recreate` the new one gets pods only once the
  old pods are gone (RollingUpdate is treated the same way: no surge, no maxUnavailable).
* A StatefulSet owns `<statefulset>-<ordinal>` for ordinals 0..replicas-1, hostname the pod's name
  and `subdomain` its serviceName. `podManagementPolicy: Parallel` creates and deletes them all at
  once; `OrderedReady` one at a time, each waiting for the previous to be Running and Ready, and
  removes from the highest ordinal. A pod name is reused only once the old pod is gone. A new
  template (`controller-revision-hash`) replaces the pods one at a time, highest ordinal first,
  once all are ready (RollingUpdate; `partition` and OnDelete are not modelled).
* Pods carry the template's labels and annotations, the controller's labels
  (`pod-template-hash`, `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`,
  `apps.kubernetes.io/pod-index`), a controller ownerReference, the kubelet's finalizer, and are
  bound to the one node at creation (there is no scheduler).
* Status, from the pods' own status: `replicas`, `readyReplicas`, `availableReplicas`
  (minReadySeconds is not modelled: available = ready), `updatedReplicas`,
  `unavailableReplicas` (Deployment), `currentReplicas`, `currentRevision`, `updateRevision`
  (StatefulSet), `observedGeneration`, and the Deployment's `Available` condition. Fields that
  are zero are left out, as the API server's `omitempty` does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import traceback
from collections.abc import Callable
from typing import Any

from testbed.podrunner.kubelet import FINALIZER, timestamp
from testbed.podrunner.labels import matches
from testbed.podrunner.podspec import NODE_NAME
from testbed.podrunner.services import pod_ready

Obj = dict[str, Any]
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The characters of generated names and hashes (Kubernetes' SafeEncodeString)."""
APPS = "apps/v1"


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:10])


def owner_reference(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Obj, owner: Obj) -> bool:
    if obj["metadata"].get("namespace") != owner["metadata"].get("namespace"):
        return False
    return any(
        r.get("uid") == owner["metadata"]["uid"] and r.get("controller")
        for r in obj["metadata"].get("ownerReferences") or []
    )


def terminating(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def new_pod(
    template: Obj,
    owner: Obj,
    labels: dict[str, str],
    *,
    name: str = "",
    generate_name: str = "",
    hostname: str = "",
    subdomain: str = "",
) -> Obj:
    template_meta = template.get("metadata") or {}
    metadata: Obj = {
        "namespace": owner["metadata"].get("namespace", "default"),
        "labels": {**(template_meta.get("labels") or {}), **labels},
        "ownerReferences": [owner_reference(owner)],
        "finalizers": [FINALIZER],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    spec["nodeName"] = NODE_NAME
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _running_and_ready(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod) and not terminating(pod)


def _ordinal(pod: Obj) -> int:
    suffix = pod["metadata"]["name"].rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


class Controllers:
    def __init__(self, kube: Any, record_error: Callable[[str], None]) -> None:
        self.kube = kube
        self.record_error = record_error
        self._transitions: dict[tuple[str, str], tuple[str, float]] = {}

    def sync(self, deployments: list[Obj], replicasets: list[Obj], statefulsets: list[Obj], pods: list[Obj]) -> None:
        for kind, objects, handler in (
            ("Deployment", deployments, lambda d: self._deployment(d, replicasets, pods)),
            ("ReplicaSet", replicasets, lambda rs: self._replicaset(rs, pods)),
            ("StatefulSet", statefulsets, lambda s: self._statefulset(s, pods)),
        ):
            for obj in objects:
                if terminating(obj):
                    continue  # the garbage collector takes its dependents
                try:
                    handler(obj)
                except Exception as exc:
                    if getattr(exc, "status", None) in (404, 409):
                        continue  # changed or gone in between: the next sync sees it
                    meta = obj["metadata"]
                    self.record_error(f"{kind} {meta.get('namespace')}/{meta['name']}: {traceback.format_exc()}")

    # Deployments and ReplicaSets.

    def _deployment(self, deployment: Obj, replicasets: list[Obj], pods: list[Obj]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        template = spec.get("template") or {}
        desired = int(spec.get("replicas", 1))
        pod_hash = template_hash(template)
        owned = [rs for rs in replicasets if owned_by(rs, deployment)]
        current = next(
            (rs for rs in owned if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == pod_hash), None
        )
        old = [rs for rs in owned if rs is not current]
        for rs in old:
            if int((rs.get("spec") or {}).get("replicas", 1)) != 0:
                self.kube.patch(
                    APPS, "replicasets", meta["namespace"], rs["metadata"]["name"], {"spec": {"replicas": 0}}
                )
        old_pods = [p for p in pods if any(owned_by(p, rs) for rs in old)]
        if current is None:
            if not old_pods:  # Recreate (and our RollingUpdate): the old pods go first
                labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod_hash}
                rs_template = copy.deepcopy(template)
                rs_template.setdefault("metadata", {})["labels"] = labels
                selector = copy.deepcopy(spec.get("selector") or {})
                selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
                revision = 1 + max(
                    (
                        int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", 0))
                        for rs in owned
                    ),
                    default=0,
                )
                self.kube.create(
                    {
                        "apiVersion": APPS,
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": f"{meta['name']}-{pod_hash}",
                            "namespace": meta["namespace"],
                            "labels": labels,
                            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                            "ownerReferences": [owner_reference(deployment)],
                        },
                        "spec": {"replicas": desired, "selector": selector, "template": rs_template},
                    }
                )
        elif int((current.get("spec") or {}).get("replicas", 1)) != desired:
            self.kube.patch(
                APPS, "replicasets", meta["namespace"], current["metadata"]["name"], {"spec": {"replicas": desired}}
            )

        mine = [p for p in pods if not terminating(p) and any(owned_by(p, rs) for rs in owned)]
        updated = [p for p in mine if current is not None and owned_by(p, current)]
        ready = [p for p in mine if pod_ready(p)]
        available = len(ready) >= desired
        key = (meta["uid"], "Available")
        if self._transitions.get(key, ("", 0.0))[0] != str(available):
            self._transitions[key] = (str(available), time.time())
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(mine),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "unavailableReplicas": max(desired - len(ready), 0),
            "conditions": [
                {
                    "type": "Available",
                    "status": str(available),
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                    "lastTransitionTime": timestamp(self._transitions[key][1]),
                    "lastUpdateTime": timestamp(self._transitions[key][1]),
                }
            ],
        }
        self._write_status(deployment, "deployments", status)

    def _replicaset(self, rs: Obj, pods: list[Obj]) -> None:
        meta, spec = rs["metadata"], rs.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        mine = [
            p
            for p in pods
            if owned_by(p, rs)
            and not terminating(p)
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        for _ in range(desired - len(mine)):
            template = spec.get("template") or {}
            if not matches(spec.get("selector"), (template.get("metadata") or {}).get("labels") or {}):
                raise ValueError("the pod template's labels do not match the selector")
            self.kube.create(new_pod(template, rs, {}, generate_name=f"{meta['name']}-"))
        if len(mine) > desired:
            # As the ReplicaSet controller: the not ready go first, then the newest.
            newest_first = sorted(mine, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            for pod in sorted(newest_first, key=pod_ready)[: len(mine) - desired]:
                self.kube.delete("v1", "pods", meta["namespace"], pod["metadata"]["name"])
        ready = sum(1 for p in mine if pod_ready(p))
        self._write_status(
            rs,
            "replicasets",
            {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(mine),
                "fullyLabeledReplicas": len(mine),
                "readyReplicas": ready,
                "availableReplicas": ready,
            },
        )

    # StatefulSets.

    def _statefulset(self, sts: Obj, pods: list[Obj]) -> None:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name, namespace = meta["name"], meta["namespace"]
        desired = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        template = spec.get("template") or {}
        revision = f"{name}-{template_hash(template)}"
        owned = {p["metadata"]["name"]: p for p in pods if owned_by(p, sts)}
        taken = {p["metadata"]["name"] for p in pods if p["metadata"].get("namespace") == namespace}

        extra = sorted(
            (p for p in owned.values() if _ordinal(p) >= desired or _ordinal(p) < 0), key=_ordinal, reverse=True
        )
        if parallel:
            for pod in extra:
                if not terminating(pod):
                    self.kube.delete("v1", "pods", namespace, pod["metadata"]["name"])
        elif extra and not any(terminating(p) for p in extra):
            self.kube.delete("v1", "pods", namespace, extra[0]["metadata"]["name"])

        for ordinal in range(desired):
            pod_name = f"{name}-{ordinal}"
            pod = owned.get(pod_name)
            if pod is None:
                if pod_name in taken:
                    continue  # not ours (or not gone yet): never two pods of one name
                labels = {
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                }
                self.kube.create(
                    new_pod(
                        template, sts, labels, name=pod_name, hostname=pod_name, subdomain=spec.get("serviceName") or ""
                    )
                )
                if not parallel:
                    break
            elif not parallel and not _running_and_ready(pod):
                break

        current = [p for p in owned.values() if 0 <= _ordinal(p) < desired]
        outdated = [
            p for p in current if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != revision
        ]
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        if rolling and outdated and len(current) == desired and all(_running_and_ready(p) for p in current):
            highest = max(outdated, key=_ordinal)
            self.kube.delete("v1", "pods", namespace, highest["metadata"]["name"])

        alive = [p for p in owned.values() if not terminating(p)]
        ready = sum(1 for p in alive if pod_ready(p))
        updated = sum(
            1 for p in alive if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision
        )
        previous = (sts.get("status") or {}).get("currentRevision") or revision
        self._write_status(
            sts,
            "statefulsets",
            {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(alive),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": updated if not outdated else len(alive) - updated,
                "updatedReplicas": updated,
                "currentRevision": revision if not outdated else previous,
                "updateRevision": revision,
                "collisionCount": 0,
            },
        )

    def _write_status(self, obj: Obj, plural: str, status: Obj) -> None:
        """Patch what differs; zero counts are left out (omitempty), so they are removed."""
        status = {k: v for k, v in status.items() if v not in (0, None, []) or k == "collisionCount"}
        old = obj.get("status") or {}
        patch = {k: status.get(k) for k in set(old) | set(status) if old.get(k) != status.get(k)}
        if patch:
            self.kube.patch_status(APPS, plural, obj["metadata"]["namespace"], obj["metadata"]["name"], patch)
