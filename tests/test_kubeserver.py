"""
Tests of the in-process Kubernetes API test server (tests/kubeserver), with real kubectl and kopf.

The test resource is a small FederatedTrainingJob look-alike in its own API group,
so that these tests do not depend on the project's real CRD.
"""

import datetime
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner

from testbed.kubeserver import KubeServer
from testbed.kubeserver.tables import human_duration
from testbed.kubeserver.watch import Change, EventLog

pytest_plugins = ["tests.conftest_kubeserver"]  # the `kube` fixture
T = TypeVar("T")
GROUP, VERSION, PLURAL = "test.kubeflower.io", "v1alpha1", "trainingjobs"
GV = f"{GROUP}/{VERSION}"
JOBS = f"/apis/{GV}/namespaces/default/{PLURAL}"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "trainingjob",
            "kind": "TrainingJob",
            "shortNames": ["tj"],
            "categories": ["kubeflower"],
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.clients",
                        "statusReplicasPath": ".status.readyClients",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Clients", "type": "integer", "jsonPath": ".spec.clients"},
                    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    },
}


def job(name: str, clients: int = 2, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "TrainingJob",
        "metadata": {"name": name, **metadata},
        "spec": {"clients": clients, "rounds": 3},
    }


def api(
    kube: KubeServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    accept: str = "application/json",
    **params: str,
) -> tuple[int, Any]:
    """One HTTP request to the server: (status, parsed JSON body)."""
    url = kube.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type, "Accept": accept}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def watch(kube: KubeServer, path: str, *, accept: str = "application/json", **params: str) -> list[dict[str, Any]]:
    """The events of a watch that the server ends after ``timeoutSeconds`` (1 by default)."""
    params = {"watch": "true", "timeoutSeconds": "1", **params}
    request = urllib.request.Request(f"{kube.url}{path}?{urllib.parse.urlencode(params)}", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["type"], event["object"]["metadata"]["name"]) for event in events]


def wait_for(fn: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while not (result := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {fn}")
        time.sleep(0.02)
    return result


@pytest.fixture
def crd(kube: KubeServer) -> dict[str, Any]:
    status, body = api(kube, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert status == 201, body
    return body


# Objects, metadata, resource versions.


def test_create_sets_server_metadata(kube: KubeServer, crd: dict[str, Any]) -> None:
    status, obj = api(
        kube, "POST", JOBS, {"metadata": {"generateName": "job-"}, "spec": {"clients": 1}, "status": {"phase": "Faked"}}
    )
    assert status == 201
    metadata = obj["metadata"]
    assert metadata["name"].startswith("job-") and len(metadata["name"]) == len("job-") + 5
    assert metadata["namespace"] == "default"
    assert metadata["generation"] == 1
    assert metadata["uid"] and metadata["creationTimestamp"].endswith("Z")
    assert (obj["kind"], obj["apiVersion"]) == ("TrainingJob", GV)
    assert "status" not in obj  # the status subresource: clients cannot set it on creation

    status, again = api(kube, "POST", JOBS, job(metadata["name"]))
    assert (status, again["reason"]) == (409, "AlreadyExists")
    status, _ = api(kube, "POST", JOBS, job("x", namespace="other"))
    assert status == 400
    status, body = api(kube, "POST", f"/apis/{GV}/namespaces/missing/{PLURAL}", job("x"))
    assert (status, body["message"]) == (404, 'namespaces "missing" not found')
    status, body = api(kube, "GET", f"{JOBS}/nope")
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")


def test_resource_version_conflicts_and_json_patch_tests(kube: KubeServer) -> None:
    _, cm = api(kube, "POST", CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    rv1 = int(cm["metadata"]["resourceVersion"])

    _, patched = api(
        kube, "PATCH", f"{CONFIGMAPS}/cm", {"data": {"b": "2"}}, content_type="application/merge-patch+json"
    )
    assert patched["data"] == {"a": "1", "b": "2"}
    rv2 = int(patched["metadata"]["resourceVersion"])
    assert rv2 > rv1

    stale = {**cm, "data": {"c": "3"}}  # still carries rv1
    status, body = api(kube, "PUT", f"{CONFIGMAPS}/cm", stale)
    assert (status, body["reason"]) == (409, "Conflict")
    status, _ = api(
        kube,
        "PATCH",
        f"{CONFIGMAPS}/cm",
        {"metadata": {"resourceVersion": str(rv1)}},
        content_type="application/merge-patch+json",
    )
    assert status == 409

    # As kopf adds its finalizers: a JSON patch guarded by a test of the resourceVersion.
    guarded = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": str(rv1)},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    status, body = api(kube, "PATCH", f"{CONFIGMAPS}/cm", guarded, content_type="application/json-patch+json")
    assert (status, body["reason"]) == (422, "Invalid")
    guarded[0]["value"] = str(rv2)
    status, body = api(kube, "PATCH", f"{CONFIGMAPS}/cm", guarded, content_type="application/json-patch+json")
    assert status == 200 and body["metadata"]["finalizers"] == ["x/y"]

    status, replaced = api(kube, "PUT", f"{CONFIGMAPS}/cm", {**body, "data": {"c": "3"}})
    assert status == 200 and replaced["data"] == {"c": "3"}
    assert replaced["metadata"]["uid"] == cm["metadata"]["uid"]

    # A no-op write bumps nothing (and notifies no watcher), as on a real server.
    _, same = api(kube, "PATCH", f"{CONFIGMAPS}/cm", {"data": {"c": "3"}}, content_type="application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == replaced["metadata"]["resourceVersion"]


def test_status_subresource_and_generation(kube: KubeServer, crd: dict[str, Any]) -> None:
    _, obj = api(kube, "POST", JOBS, job("j"))
    merge = "application/merge-patch+json"

    _, obj = api(
        kube, "PATCH", f"{JOBS}/j", {"spec": {"clients": 3}, "status": {"phase": "Ignored"}}, content_type=merge
    )
    assert obj["spec"]["clients"] == 3 and "status" not in obj
    assert obj["metadata"]["generation"] == 2

    _, obj = api(
        kube, "PATCH", f"{JOBS}/j/status", {"spec": {"clients": 9}, "status": {"phase": "Running"}}, content_type=merge
    )
    assert obj["spec"]["clients"] == 3 and obj["status"] == {"phase": "Running"}
    assert obj["metadata"]["generation"] == 2  # status writes do not bump it

    _, obj = api(
        kube, "PATCH", f"{JOBS}/j", {"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}}, content_type=merge
    )
    assert obj["metadata"]["generation"] == 2  # metadata writes do not bump it either
    assert obj["status"] == {"phase": "Running"}  # main writes keep the status

    status, obj = api(kube, "PUT", f"{JOBS}/j/status", {**obj, "status": {"phase": "Succeeded"}})
    assert status == 200 and obj["status"] == {"phase": "Succeeded"}
    status, obj = api(kube, "PUT", f"{JOBS}/j", {**obj, "spec": {"clients": 4}, "status": None})
    assert obj["status"] == {"phase": "Succeeded"} and obj["metadata"]["generation"] == 3
    assert kube.get(GV, PLURAL, "default", "j") == obj


# Watches.


def test_watch_resumes_from_resource_version_without_loss_or_replay(kube: KubeServer) -> None:
    api(kube, "POST", CONFIGMAPS, {"metadata": {"name": "before"}})
    _, listing = api(kube, "GET", CONFIGMAPS)
    assert (listing["kind"], listing["apiVersion"]) == ("ConfigMapList", "v1")
    listed_rv = listing["metadata"]["resourceVersion"]

    api(kube, "POST", CONFIGMAPS, {"metadata": {"name": "after1"}})  # between the list and the watch
    _, after2 = api(kube, "POST", CONFIGMAPS, {"metadata": {"name": "after2"}})
    api(kube, "PATCH", f"{CONFIGMAPS}/after1", {"data": {"x": "y"}}, content_type="application/merge-patch+json")
    api(kube, "DELETE", f"{CONFIGMAPS}/before")

    expected = [("ADDED", "after1"), ("ADDED", "after2"), ("MODIFIED", "after1"), ("DELETED", "before")]
    assert summary(watch(kube, CONFIGMAPS, resourceVersion=listed_rv)) == expected
    assert summary(watch(kube, "/api/v1/configmaps", resourceVersion=listed_rv)) == expected  # cluster-wide
    resumed = watch(kube, CONFIGMAPS, resourceVersion=after2["metadata"]["resourceVersion"])
    assert summary(resumed) == expected[2:]
    # With no resourceVersion, a watch starts with the current objects, then only new changes.
    assert summary(watch(kube, CONFIGMAPS)) == [("ADDED", "after1"), ("ADDED", "after2")]


def test_watch_is_live_and_sees_direct_writes(kube: KubeServer) -> None:
    start = api(kube, "GET", CONFIGMAPS)[1]["metadata"]["resourceVersion"]
    writer = threading.Timer(
        0.3, lambda: kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live"}})
    )
    writer.start()
    began = time.monotonic()
    events = watch(kube, CONFIGMAPS, resourceVersion=start, timeoutSeconds="2")
    assert summary(events) == [("ADDED", "live")]
    assert 1.5 < time.monotonic() - began < 5  # timeoutSeconds ends the stream
    assert kube.requests.count("POST") == 0  # direct writes are not HTTP requests


def test_watch_with_selectors_sees_objects_enter_and_leave(kube: KubeServer) -> None:
    start = api(kube, "GET", CONFIGMAPS)[1]["metadata"]["resourceVersion"]
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"app": "x"}}})
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "labels": {"app": "y"}}})
    merge = "application/merge-patch+json"
    api(kube, "PATCH", f"{CONFIGMAPS}/a", {"metadata": {"labels": {"app": "y"}}}, content_type=merge)
    api(kube, "PATCH", f"{CONFIGMAPS}/b", {"metadata": {"labels": {"app": "x"}}}, content_type=merge)

    events = watch(kube, CONFIGMAPS, resourceVersion=start, labelSelector="app=x")
    assert summary(events) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b")]
    events = watch(kube, CONFIGMAPS, resourceVersion=start, fieldSelector="metadata.name=b")
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "b")]


def test_watch_from_a_compacted_resource_version_is_expired() -> None:
    log = EventLog(capacity=2)
    for rv in range(1, 8):
        log.append(Change(rv, kmock.resource("v1/configmaps"), "ADDED", {"metadata": {"name": str(rv)}}, None))
    assert [change.rv for change in log.since(5)] == [6, 7]
    with pytest.raises(kmock.KubernetesError) as e:
        log.since(1)
    assert (e.value.status, e.value.reason) == (410, "Expired")


def test_initial_events_streaming_ends_with_a_bookmark(kube: KubeServer) -> None:
    api(kube, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    events = watch(
        kube, CONFIGMAPS, sendInitialEvents="true", allowWatchBookmarks="true", resourceVersionMatch="NotOlderThan"
    )
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# Deletion: finalizers, garbage collection, namespaces.


def test_finalizers_hold_deletion(kube: KubeServer, crd: dict[str, Any]) -> None:
    _, obj = api(kube, "POST", JOBS, job("j", finalizers=["test/one"]))
    start = obj["metadata"]["resourceVersion"]
    status, deleting = api(kube, "DELETE", f"{JOBS}/j")
    assert status == 200 and deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == 2  # as a real server, marking for deletion bumps it
    assert kube.get(GV, PLURAL, "default", "j") is not None

    merge = "application/merge-patch+json"
    status, body = api(
        kube, "PATCH", f"{JOBS}/j", {"metadata": {"finalizers": ["test/one", "test/two"]}}, content_type=merge
    )
    assert status == 422 and "no new finalizers" in body["message"]
    status, _ = api(kube, "PATCH", f"{JOBS}/j", {"metadata": {"finalizers": None}}, content_type=merge)
    assert status == 200
    assert kube.get(GV, PLURAL, "default", "j") is None
    assert summary(watch(kube, JOBS, resourceVersion=start)) == [("MODIFIED", "j"), ("DELETED", "j")]


def test_owner_references_are_garbage_collected_in_cascade(kube: KubeServer) -> None:
    def configmap(name: str, *owners: dict[str, Any]) -> dict[str, Any]:
        references = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
            for o in owners
        ]
        return kube.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": references}}
        )

    owner, other = configmap("owner"), configmap("other")
    child = configmap("child", owner)
    configmap("grandchild", child)
    configmap("shared", owner, other)
    kube.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "deploy",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
                ],
            },
        }
    )

    kube.delete("v1", "configmaps", "default", "owner")
    names = {obj["metadata"]["name"] for obj in kube.list("v1", "configmaps")}
    assert names == {"other", "shared"}
    assert kube.list("apps/v1", "deployments") == []
    shared = kube.get("v1", "configmaps", "default", "shared")
    assert [ref["name"] for ref in shared["metadata"]["ownerReferences"]] == ["other"]

    status, _ = api(kube, "DELETE", f"{CONFIGMAPS}/other", {"propagationPolicy": "Orphan"})
    assert status == 200
    assert "ownerReferences" not in kube.get("v1", "configmaps", "default", "shared")["metadata"]


def test_a_dependent_written_after_its_owner_went_is_collected(kube: KubeServer) -> None:
    """A controller acting on a stale list makes a pod for a ReplicaSet already collected: it goes too."""
    owner = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "adopted"}})
    kube.delete("v1", "configmaps", "default", "owner")

    created = kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "ownerReferences": [reference]}}
    )
    assert created["metadata"]["name"] == "late" and kube.get("v1", "configmaps", "default", "late") is None
    kube.patch("v1", "configmaps", "default", "adopted", {"metadata": {"ownerReferences": [reference]}})
    assert kube.get("v1", "configmaps", "default", "adopted") is None
    alive = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "alive"}})
    kept = {**reference, "name": "alive", "uid": alive["metadata"]["uid"]}
    kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "ownerReferences": [reference, kept]}}
    )
    assert kube.get("v1", "configmaps", "default", "two") is not None, "one owner still exists: kept"


def test_namespace_deletion_removes_its_objects(kube: KubeServer) -> None:
    status, ns = api(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    assert status == 201 and ns["status"] == {"phase": "Active"}
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "team"}})
    assert [n["metadata"]["name"] for n in api(kube, "GET", "/api/v1/namespaces")[1]["items"]] == ["default", "team"]
    kube.delete("v1", "namespaces", None, "team")
    assert kube.get("v1", "namespaces", None, "team") is None
    assert kube.list("v1", "configmaps", "team") == []


# Selectors, pagination, patches.


def test_label_and_field_selectors(kube: KubeServer) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {})]:
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})

    def names(**params: str) -> list[str]:
        return [item["metadata"]["name"] for item in api(kube, "GET", CONFIGMAPS, **params)[1]["items"]]

    assert names(labelSelector="app=x") == ["a"]
    assert names(labelSelector="app==x") == ["a"]
    assert names(labelSelector="app!=x") == ["b", "c"]
    assert names(labelSelector="app in (x, y)") == ["a", "b"]
    assert names(labelSelector="app notin (x)") == ["b", "c"]
    assert names(labelSelector="app") == ["a", "b"]
    assert names(labelSelector="!app") == ["c"]
    assert names(labelSelector="app in (x,y),tier") == ["a"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    assert names(fieldSelector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    assert [o["metadata"]["name"] for o in kube.list("v1", "configmaps", label_selector="app")] == ["a", "b"]
    assert api(kube, "GET", CONFIGMAPS, labelSelector="app in x")[0] == 400

    # As kubectl describe finds the events of an object.
    for name, involved in [("e1", "a"), ("e2", "b")]:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name},
                "reason": "R",
                "involvedObject": {"kind": "ConfigMap", "name": involved, "namespace": "default"},
            }
        )
    _, events = api(
        kube,
        "GET",
        "/api/v1/namespaces/default/events",
        fieldSelector="involvedObject.kind=ConfigMap,involvedObject.name=a",
    )
    assert [event["metadata"]["name"] for event in events["items"]] == ["e1"]


def test_list_pagination(kube: KubeServer) -> None:
    for name in "abcde":
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
    seen, token = [], ""
    while True:
        _, page = api(kube, "GET", CONFIGMAPS, limit="2", **({"continue": token} if token else {}))
        seen.append([item["metadata"]["name"] for item in page["items"]])
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [["a", "b"], ["c", "d"], ["e"]]


def test_strategic_merge_patch_of_builtin_lists(kube: KubeServer) -> None:
    kube.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "finalizers": ["a"]},
            "spec": {
                "replicas": 1,
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "main", "image": "v1", "env": [{"name": "A", "value": "1"}]},
                            {"name": "side", "image": "s1"},
                        ]
                    }
                },
            },
        }
    )
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "side"}, {"name": "main"}],
                    "containers": [{"name": "main", "image": "v2", "env": [{"name": "B", "value": "2"}]}],
                }
            }
        },
    }
    status, obj = api(
        kube,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/d",
        patch,
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200, obj
    assert obj["metadata"]["finalizers"] == ["a", "b"]
    assert obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "side", "image": "s1"},
        {"name": "main", "image": "v2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
    ]
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    _, obj = api(
        kube,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/d",
        delete,
        content_type="application/strategic-merge-patch+json",
    )
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["main"]


# Subresources: scale.


def test_scale_subresource(kube: KubeServer, crd: dict[str, Any]) -> None:
    api(kube, "POST", JOBS, job("j", clients=2))
    kube.patch_status(GV, PLURAL, "default", "j", {"readyClients": 1, "selector": "job=j"})
    status, scale = api(kube, "GET", f"{JOBS}/j/scale")
    assert status == 200
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 2} and scale["status"] == {"replicas": 1, "selector": "job=j"}

    status, scaled = api(
        kube, "PATCH", f"{JOBS}/j/scale", {"spec": {"replicas": 5}}, content_type="application/merge-patch+json"
    )
    assert status == 200 and scaled["spec"] == {"replicas": 5}
    obj = kube.get(GV, PLURAL, "default", "j")
    assert obj["spec"]["clients"] == 5 and obj["metadata"]["generation"] == 2
    status, _ = api(kube, "PUT", f"{JOBS}/j/scale", {**scale, "spec": {"replicas": 1}})
    assert status == 409  # the Scale's resourceVersion is stale

    kube.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}},
        }
    )
    _, scale = api(kube, "GET", "/apis/apps/v1/namespaces/default/deployments/d/scale")
    assert scale["spec"] == {"replicas": 1} and scale["status"] == {"replicas": 0, "selector": "app=d"}


# Discovery and tables.


def test_discovery_follows_crds(kube: KubeServer) -> None:
    _, core = api(kube, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    core_names = {r["name"] for r in core["resources"]}
    assert {
        "namespaces",
        "pods",
        "pods/status",
        "services",
        "events",
        "configmaps",
        "secrets",
        "serviceaccounts",
    } <= core_names
    _, apps = api(kube, "GET", "/apis/apps/v1")
    assert {"deployments/scale", "statefulsets/status", "statefulsets/scale"} <= {r["name"] for r in apps["resources"]}
    _, groups = api(kube, "GET", "/apis")
    assert {"apps", "apiextensions.k8s.io", "events.k8s.io", "coordination.k8s.io", "networking.k8s.io"} <= {
        group["name"] for group in groups["groups"]
    }
    assert api(kube, "GET", f"/apis/{GROUP}")[0] == 404
    assert api(kube, "GET", f"/apis/{GV}")[0] == 404

    status, crd = api(kube, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert status == 201
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    _, groups = api(kube, "GET", "/apis")
    assert {
        "name": GROUP,
        "versions": [{"groupVersion": GV, "version": VERSION}],
        "preferredVersion": {"groupVersion": GV, "version": VERSION},
    } in groups["groups"]
    _, resources = api(kube, "GET", f"/apis/{GV}")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert set(by_name) == {PLURAL, f"{PLURAL}/status", f"{PLURAL}/scale"}
    assert by_name[PLURAL]["shortNames"] == ["tj"] and by_name[PLURAL]["categories"] == ["kubeflower"]
    assert by_name[PLURAL]["kind"] == "TrainingJob" and by_name[PLURAL]["namespaced"] is True
    assert "shortNames" not in by_name[f"{PLURAL}/status"]
    assert by_name[f"{PLURAL}/scale"]["kind"] == "Scale"

    api(kube, "POST", JOBS, job("j"))
    status, _ = api(kube, "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert status == 200
    assert api(kube, "GET", f"/apis/{GV}")[0] == 404
    assert api(kube, "GET", JOBS)[0] == 404


def test_table_rendering(kube: KubeServer, crd: dict[str, Any]) -> None:
    api(kube, "POST", JOBS, job("j"))
    kube.patch_status(
        GV,
        PLURAL,
        "default",
        "j",
        {
            "phase": "Running",
            "conditions": [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}],
        },
    )
    status, table = api(kube, "GET", JOBS, accept=TABLE)
    assert status == 200 and (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Phase", "Clients", "Ready", "Age"]
    [row] = table["rows"]
    assert row["cells"][:4] == ["j", "Running", 2, "False"]
    assert row["cells"][4].endswith("s")  # rendered by the server as kubectl prints it
    assert row["object"]["kind"] == "PartialObjectMetadata"
    _, table = api(kube, "GET", f"{JOBS}/j", accept=TABLE, includeObject="Object")
    assert table["rows"][0]["object"]["spec"] == {"clients": 2, "rounds": 3}

    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    _, table = api(kube, "GET", CONFIGMAPS, accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]

    events = watch(kube, JOBS, accept=TABLE)
    assert events[0]["object"]["kind"] == "Table" and events[0]["object"]["rows"][0]["cells"][0] == "j"


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(datetime.timedelta(seconds=seconds)) == text


# Real kubectl.


def test_kubectl_with_custom_resources(kube: KubeServer, tmp_path: Any) -> None:
    crd_file, job_file = tmp_path / "crd.json", tmp_path / "job.json"
    crd_file.write_text(json.dumps(CRD))
    job_file.write_text(json.dumps(job("demo", labels={"app": "demo"})))
    assert "created" in kube.kubectl("apply", "-f", str(crd_file), "--validate=false").stdout
    assert "created" in kube.kubectl("apply", "-f", str(job_file), "--validate=false").stdout

    lines = kube.kubectl("get", "tj").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "CLIENTS", "READY", "AGE"]
    assert lines[1].split()[:2] == ["demo", "2"]

    # get -w prints the change of a printer column.
    timer = threading.Timer(1.0, kube.patch_status, (GV, PLURAL, "default", "demo", {"phase": "Running"}))
    timer.start()
    watched = kube.kubectl("get", "tj", "-w", timeout=3, check=False).stdout.splitlines()
    timer.join()
    assert watched[0].split()[0] == "NAME" and watched[-1].split()[:3] == ["demo", "Running", "2"]

    described = kube.kubectl("describe", "tj", "demo").stdout
    assert "Name:         demo" in described and "Phase:  Running" in described

    assert "scaled" in kube.kubectl("scale", "tj", "demo", "--replicas=3").stdout
    assert kube.get(GV, PLURAL, "default", "demo")["spec"]["clients"] == 3

    timer = threading.Timer(0.5, kube.patch_status, (GV, PLURAL, "default", "demo", {"phase": "Succeeded"}))
    timer.start()
    waited = kube.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "tj/demo", "--timeout=10s")
    timer.join()
    assert "condition met" in waited.stdout

    job_file.write_text(json.dumps(job("demo", clients=4, labels={"app": "demo"})))
    assert "configured" in kube.kubectl("apply", "-f", str(job_file), "--validate=false").stdout
    assert kube.get(GV, PLURAL, "default", "demo")["spec"]["clients"] == 4

    assert "deleted" in kube.kubectl("delete", "tj", "demo").stdout
    assert "No resources found" in kube.kubectl("get", "kubeflower").stderr  # by category


def test_kubectl_with_builtin_resources(kube: KubeServer, tmp_path: Any) -> None:
    manifest = tmp_path / "deploy.json"

    def deployment(image: str) -> dict[str, Any]:
        labels = {"app": "web"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
                },
            },
        }

    manifest.write_text(json.dumps(deployment("nginx:1")))
    kube.kubectl("apply", "-f", str(manifest), "--validate=false")
    manifest.write_text(json.dumps(deployment("nginx:2")))  # a strategic merge patch this time
    assert "configured" in kube.kubectl("apply", "-f", str(manifest), "--validate=false").stdout
    [container] = kube.get("apps/v1", "deployments", "default", "web")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:2"

    kube.kubectl("scale", "deployment/web", "--replicas=3")
    assert kube.get("apps/v1", "deployments", "default", "web")["spec"]["replicas"] == 3
    assert kube.kubectl("get", "deploy", "-o", "name").stdout.strip() == "deployment.apps/web"
    assert "web" in kube.kubectl("get", "all").stdout
    # `kubectl create namespace team` would send protobuf (answered 415): create from a file.
    namespace = tmp_path / "ns.json"
    namespace.write_text(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
    kube.kubectl("create", "-f", str(namespace), "--validate=false")
    assert kube.kubectl("get", "ns", "-o", "name").stdout.split() == ["namespace/default", "namespace/team"]
    kube.kubectl("delete", "namespace", "team")
    assert kube.get("v1", "namespaces", None, "team") is None


# Real kopf.


def test_kopf_operator_end_to_end(kube: KubeServer, crd: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    # kopf posts a handler's log line as an event only if the "kopf.objects" logger passes it; our
    # operator's startup sets that logger to WARNING for its process, which lasts in this one after
    # any test that ran the operator in-process.
    caplog.set_level(logging.INFO, logger="kopf.objects")
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 2
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.loggers = True  # post the handlers' log messages as events
    seen: list[tuple[str, str]] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(name: str, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        seen.append(("create", name))
        patch.status["phase"] = "Running"
        logger.info("Job accepted.")

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(name: str, **_: Any) -> None:
        seen.append(("delete", name))

    with KopfRunner(["run", "--standalone", "--namespace=default"], registry=registry, settings=settings) as runner:
        api(kube, "POST", JOBS, job("j"))
        obj = wait_for(lambda: (o := kube.get(GV, PLURAL, "default", "j")) and o.get("status") and o)
        assert obj["status"] == {"phase": "Running"}
        assert obj["metadata"]["finalizers"] == [f"{GROUP}/finalizer"]
        wait_for(lambda: "Job accepted." in kube.kubectl("describe", "tj", "j").stdout)

        kube.delete(GV, PLURAL, "default", "j")
        wait_for(lambda: kube.get(GV, PLURAL, "default", "j") is None)
    assert runner.exception is None
    assert seen == [("create", "j"), ("delete", "j")]
    assert kube.requests.count("PATCH", f"/{PLURAL}/j") >= 3  # finalizer, status, finalizer removal
