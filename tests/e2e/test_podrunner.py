"""The pod runner itself: the kubelet's reading of a pod spec (unit tests, no root needed), then what
a node does with real pods (marked e2e: network namespaces, root).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import wait_for
from testbed.kubeserver import KubeServer
from testbed.podrunner import PodRunner, atomic_writer, images, netns, podspec, policies, processes, services
from testbed.podrunner.labels import matches
from testbed.podrunner.pods import ALPHABET, template_hash

WORKLOAD = "ghcr.io/kubeflower/workload:0.1.0"


def pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-0", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"containers": containers, **spec},
        "status": {"podIP": "10.1.2.3", "hostIP": "10.1.2.1"},
    }


# The kubelet's reading of a spec.


def test_environment_downward_api_references_and_config_maps() -> None:
    container = {
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(IP):80/$(POD)/$(UNDEFINED)/$$(POD)"},
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"}},
    }
    objects = {
        ("configmaps", "cm"): {"data": {"k": "v"}},
        ("secrets", "s"): {"data": {"k": base64.b64encode(b"pw").decode()}},
    }
    env = podspec.environment(
        pod([container]), container, images.WORKLOAD, lambda plural, ns, name: objects.get((plural, name))
    )
    assert (
        env["PATH"].startswith(str(Path(sys.prefix) / "bin")) and env["HOME"] == "/tmp" and env["HOSTNAME"] == "web-0"
    )
    assert (env["POD"], env["APP"], env["IP"]) == ("web-0", "web", "10.1.2.3")
    assert env["URL"] == "http://10.1.2.3:80/web-0/$(UNDEFINED)/$(POD)"
    assert (env["CPUS"], env["MEM"], env["KEY"], env["SECRET"]) == ("2", "256", "v", "pw")
    with pytest.raises(podspec.ConfigError, match="not found"):
        podspec.environment(pod([container]), container, images.WORKLOAD, lambda *_: None)


def test_command_user_and_security_context() -> None:
    container = {
        "name": "c",
        "command": ["kubeflower-server"],
        "args": ["--x=$(A)"],
        "env": [{"name": "A", "value": "1"}],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec = {
        "securityContext": {"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 4000},
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    launch = podspec.launch(pod([container], **spec), container, images.WORKLOAD, lambda *_: None)
    assert launch.argv == ["kubeflower-server", "--x=1"]
    assert (launch.uid, launch.gid, launch.groups) == (2000, 3000, [3000, 4000])
    assert launch.read_only_root and launch.no_new_privileges and launch.drop_capabilities
    assert launch.mounts == [{"name": "tmp", "mountPath": "/tmp", "readOnly": False}]
    # Without command: the image's ENTRYPOINT, and args (or else its CMD).
    operator = podspec.launch(
        pod([{"name": "o", "args": ["-n", "x"]}]), {"name": "o", "args": ["-n", "x"]}, images.OPERATOR, lambda *_: None
    )
    assert operator.argv == [*images.OPERATOR.entrypoint, "-n", "x"] and (operator.uid, operator.gid) == (10001, 10001)
    root = {"name": "r", "securityContext": {"runAsUser": 0, "runAsNonRoot": True}}
    with pytest.raises(podspec.ConfigError, match="runAsNonRoot"):
        podspec.launch(pod([root]), root, images.WORKLOAD, lambda *_: None)
    sub = {"name": "s", "volumeMounts": [{"name": "tmp", "mountPath": "/x", "subPath": "a"}]}
    with pytest.raises(podspec.Unsupported, match="subPath"):
        podspec.launch(pod([sub], volumes=[{"name": "tmp", "emptyDir": {}}]), sub, images.WORKLOAD, lambda *_: None)


def test_the_kubeflower_pods_are_read_as_their_images_say() -> None:
    """The operator's own rendering of a job's pods: every field the runner reads is modelled."""
    from kubeflower.core.api import FederatedTrainingJob
    from kubeflower_operator import builders
    from kubeflower_operator.settings import Settings
    from testbed.jobs import job

    model = FederatedTrainingJob.model_validate(job("digits", namespace="ns"))
    keys_at = {"Deployment": "/var/run/kubeflower/tls", "StatefulSet": "/var/run/kubeflower/client-keys"}
    for manifest in (builders.server_deployment(model, Settings()), builders.client_statefulset(model, Settings())):
        template = manifest["spec"]["template"]
        body = {
            "metadata": {"name": "digits-clients-1", "namespace": "ns", **template["metadata"]},
            "spec": template["spec"],
        }
        (container,) = template["spec"]["containers"]
        launch = podspec.launch(body, container, images.find(container["image"]), lambda *_: None)
        assert launch.argv == container["command"] and launch.uid == 10001 and launch.read_only_root
        mounted = {m["mountPath"] for m in launch.mounts}
        assert mounted == {m["mountPath"] for m in container["volumeMounts"]}
        assert mounted >= {
            "/var/lib/kubeflower/output",
            "/var/lib/kubeflower/data",
            "/var/lib/kubeflower/flwr",
            "/tmp",
            keys_at[manifest["kind"]],  # the job's keys, a read-only Secret volume
        }
        for var in container["env"]:
            source = var.get("valueFrom", {})
            if "fieldRef" in source:
                expected = {"metadata.name": "digits-clients-1"}[source["fieldRef"]["fieldPath"]]
            elif "resourceFieldRef" in source:  # the CPU limit; none set: the node's CPUs
                expected = {"limits.cpu": str(podspec.NODE_CPUS)}[source["resourceFieldRef"]["resource"]]
            else:
                expected = var["value"]
            assert launch.env[var["name"]] == expected, var


def _dockerfile_image(path: Path) -> dict[str, Any]:
    """ENV, ENTRYPOINT, CMD and USER of a Dockerfile's final stage (enough of the syntax for ours)."""
    text = path.read_text().replace("\\\n", " ")
    stage = text[text.rindex("\nFROM ") :]
    found: dict[str, Any] = {"env": {}, "entrypoint": [], "cmd": [], "user": "0"}
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                found["env"][key] = value.replace("$PATH", images.SYSTEM_PATH)
        elif word in ("ENTRYPOINT", "CMD"):
            found[word.lower()] = json.loads(rest)
        elif word == "USER":
            found["user"] = rest.split(":")[0]
    return found


@pytest.mark.parametrize(
    ("dockerfile", "image"), [("Dockerfile.workload", images.WORKLOAD), ("Dockerfile.operator", images.OPERATOR)]
)
def test_the_images_mirror_their_dockerfiles(dockerfile: str, image: images.Image) -> None:
    built = _dockerfile_image(Path(__file__).resolve().parents[2] / dockerfile)
    env = {k: v.replace("/opt/kubeflower", sys.prefix) for k, v in built["env"].items()}
    assert {k: v for k, v in image.env.items() if k != "LANG"} == env
    assert (image.entrypoint, image.cmd, str(image.user)) == (built["entrypoint"], built["cmd"], built["user"])


def test_labels_services_and_names() -> None:
    assert matches({"app": "a"}, {"app": "a", "x": "y"}) and not matches({"app": "a"}, {"app": "b"})
    assert matches(
        {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "In", "values": ["2"]}]},
        {"a": "1", "b": "2"},
    )
    assert not matches({}, {"a": "1"}), "an empty selector selects nothing"
    server = pod([{"name": "s", "ports": [{"name": "flower", "containerPort": 9092}]}])
    server["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    not_ready = json.loads(json.dumps(server))
    not_ready["metadata"]["name"], not_ready["status"] = "web-1", {"podIP": "10.1.2.4", "conditions": []}
    service = {
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.1.2.254",
            "ports": [{"port": 80, "targetPort": "flower"}, {"port": 81}],
        },
    }
    assert services.endpoints(service, [server, not_ready]) == {80: [("10.1.2.3", 9092)], 81: [("10.1.2.3", 81)]}
    hosts = services.hosts_file("10.1.2.9", "client-0", "ns", [service], [server])
    assert "10.1.2.9\tclient-0\n" in hosts and "10.1.2.254\tweb.ns.svc.cluster.local web.ns.svc web.ns web\n" in hosts
    assert "web.ns web\n" not in services.hosts_file("10.1.2.9", "c", "other", [service], [server])
    name = template_hash({"spec": {"containers": []}})
    assert len(name) == 10 and set(name) <= set(ALPHABET) and name == template_hash({"spec": {"containers": []}})


def test_network_policies_admit_by_pod_namespace_port_and_block() -> None:
    def a_pod(name: str, ns: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"ports": [{"name": "flower", "containerPort": 9092}]}]},
            "status": {"podIP": ip},
        }

    server = a_pod("s", "a", {"role": "server"}, "10.0.0.2")
    client = a_pod("c", "a", {"role": "client"}, "10.0.0.3")
    stranger = a_pod("x", "a", {"role": "other"}, "10.0.0.4")
    monitor = a_pod("m", "mon", {"role": "other"}, "10.0.0.5")
    pods = [server, client, stranger, monitor]
    namespaces = policies.namespace_labels([{"metadata": {"name": "a"}}, {"metadata": {"name": "mon"}}])
    policy = {
        "metadata": {"namespace": "a"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "flower"}]},
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}},
                        {"ipBlock": {"cidr": "10.9.0.0/16", "except": ["10.9.9.0/24"]}},
                    ],
                    "ports": [{"port": 8080}],
                },
            ],
        },
    }
    flower = policies.admission([policy], namespaces, pods, server, 9092)
    assert [policies.admits(flower, p["status"]["podIP"]) for p in pods] == [False, True, False, False]
    status = policies.admission([policy], namespaces, pods, server, 8080)
    assert [policies.admits(status, a) for a in ("10.0.0.3", "10.0.0.5", "10.9.1.1", "10.9.9.1")] == [
        False,
        True,
        True,
        False,
    ]
    assert policies.admission([policy], namespaces, pods, client, 9092) is None, "a pod no policy selects admits all"
    open_rule = {"metadata": {"namespace": "a"}, "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 8080}]}]}}
    assert policies.admission([open_rule], namespaces, pods, client, 8080) is None
    assert policies.admission([open_rule], namespaces, pods, client, 9092) == (frozenset(), ())


def test_crash_loop_backoff_delays() -> None:
    backoff = processes.CrashLoopBackOff(initial=10, cap=40)
    assert [backoff.delay(t) for t in (0, 1, 2, 3, 4)] == [0, 10, 20, 40, 40]
    assert backoff.delay(1000) == 0, "a container that ran for long starts over"


def _visible(folder: Path) -> dict[str, bytes]:
    """What a pod reading the volume sees: its names (not the writer's `..` entries) and contents."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith("..")}


def test_a_volume_written_again_changes_as_a_whole(tmp_path: Path) -> None:
    """A kubelet's AtomicWriter: keys added, changed and removed; modes and group kept; nothing
    written when nothing changed; the old generation removed; paths outside the folder refused."""
    File = atomic_writer.File
    folder = tmp_path / "keys"
    assert atomic_writer.write(folder, {"a": File(b"1", 0o440), "b": File(b"2", 0o440)}, os.getgid())
    assert _visible(folder) == {"a": b"1", "b": b"2"}
    assert (folder / "a").is_symlink() and os.readlink(folder / "a") == "..data/a"
    assert (folder / "a").stat().st_mode & 0o7777 == 0o440 and (folder / "a").stat().st_gid == os.getgid()
    first = os.readlink(folder / atomic_writer.DATA)
    assert not atomic_writer.write(folder, {"a": File(b"1", 0o440), "b": File(b"2", 0o440)}, None)
    assert os.readlink(folder / atomic_writer.DATA) == first, "unchanged: not written again"
    assert atomic_writer.write(folder, {"b": File(b"two", 0o440), "c": File(b"3", 0o440)}, None)
    assert _visible(folder) == {"b": b"two", "c": b"3"}
    assert not (folder / "a").exists() and not (folder / "a").is_symlink(), "a removed key's file is gone"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("..")) == sorted(
        [atomic_writer.DATA, os.readlink(folder / atomic_writer.DATA)]
    ), "the old generation is removed"
    assert atomic_writer.write(folder, {"b": File(b"two", 0o400), "c": File(b"3", 0o440)}, None), "a mode changed"
    nested = tmp_path / "nested"
    atomic_writer.write(nested, {"d/e": File(b"5", 0o444)}, None)
    assert (nested / "d" / "e").read_bytes() == b"5" and os.readlink(nested / "d") == "..data/d"
    for bad in ("../x", "/etc/x", "..data", "a/../../x"):
        with pytest.raises(ValueError, match="must be relative"):
            atomic_writer.write(tmp_path / "bad", {bad: File(b"", 0o444)}, None)


def test_a_reader_never_sees_a_half_written_volume(tmp_path: Path) -> None:
    """Files written again while a reader reads them: every read is one whole generation's file."""
    File = atomic_writer.File
    folder, size = tmp_path / "keys", 1 << 20
    atomic_writer.write(folder, {"k": File(b"0" * size, 0o444)}, None)
    stop, seen, bad = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            data = (folder / "k").read_bytes()
            seen.add(data[:1])
            if len(data) != size or data.count(data[:1]) != size:
                bad.append((len(data), data.count(data[:1])))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for generation in range(1, 40):
            atomic_writer.write(folder, {"k": File(str(generation % 10).encode() * size, 0o444)}, None)
    finally:
        stop.set()
        reader.join()
    assert not bad, f"half-written reads: {bad[:3]}"
    assert len(seen) > 1, "the reader saw the file change"


# A node.

SERVER = textwrap.dedent("""
    import http.server, json, os, socket
    info = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()), "pid": os.getpid(),
            "hostname": socket.gethostname(), "env": dict(os.environ), "hosts": open("/etc/hosts").read()}
    try:
        open("/root-owned-file", "w")
    except OSError as exc:
        info["root_write"] = exc.errno
    open("/srv/data/mine", "w").write(info["hostname"])
    info["data"] = os.listdir("/srv/data")
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(info).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
""")
CLIENT = textwrap.dedent("""
    import json, sys, time, urllib.request
    for _ in range(100):
        try:
            print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), flush=True)
            break
        except OSError as exc:
            print("retrying:", exc, flush=True)
            time.sleep(0.2)
    exit_code = int(sys.argv[2])
    time.sleep(0.5)
    sys.exit(exit_code)
""")


def workloads(client_exit: int = 0) -> list[dict[str, Any]]:
    security = {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 20000, "runAsNonRoot": True}
    container_security = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "securityContext": security,
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [
                        {
                            "name": "web",
                            "image": WORKLOAD,
                            "command": ["python", "-c", SERVER],
                            "env": [
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "GREETING", "value": "hello $(POD)"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                            "securityContext": container_security,
                            "volumeMounts": [{"name": "data", "mountPath": "/srv/data"}],
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "client"},
        "spec": {
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "client"}},
            "template": {
                "metadata": {"labels": {"app": "client"}},
                "spec": {
                    "securityContext": security,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "client",
                            "image": WORKLOAD,
                            "command": ["python", "-c", CLIENT, "http://web.default.svc/", str(client_exit)],
                            "securityContext": container_security,
                        }
                    ],
                },
            },
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}],
        },
    }
    intruder = json.loads(json.dumps(statefulset).replace('"client"', '"intruder"'))
    intruder["spec"]["replicas"] = 1
    return [deployment, service, statefulset, policy, intruder]


def first_json(text: str) -> dict[str, Any]:
    return next(json.loads(line) for line in text.splitlines() if line.startswith("{"))


@pytest.mark.e2e
@pytest.mark.parametrize("node", [1.0], indirect=True)  # a 1 s CrashLoopBackOff: quick restarts
def test_a_node_runs_pods_as_their_specs_say(node: tuple[KubeServer, PodRunner]) -> None:
    kube, runner = node
    for obj in workloads(client_exit=3):
        kube.create(obj)
    deployment = wait_for(
        lambda: (
            (d := kube.get("apps/v1", "deployments", "default", "web"))
            and (d.get("status") or {}).get("readyReplicas") == 1
            and d
        ),
        60,
        "the Deployment ready",
    )
    assert deployment["status"]["availableReplicas"] == 1 and deployment["status"]["observedGeneration"] == 1
    (web,) = kube.list("v1", "pods", "default", label_selector="app=web")
    replicaset = kube.list("apps/v1", "replicasets", "default")[0]
    assert web["metadata"]["name"].startswith(f"{replicaset['metadata']['name']}-") and replicaset["metadata"][
        "name"
    ].startswith("web-")
    assert web["metadata"]["ownerReferences"][0]["uid"] == replicaset["metadata"]["uid"]
    assert web["metadata"]["labels"]["pod-template-hash"] in replicaset["metadata"]["name"]
    service = kube.get("v1", "services", "default", "web")
    assert service["spec"]["clusterIP"] and web["status"]["podIP"] != service["spec"]["clusterIP"]

    # The clients reach the server by its Service's name (through the cluster IP, port 80 -> "http").
    def client_saw() -> dict[str, Any] | None:
        text = runner.logs("default", "client-1", "client")
        return first_json(text) if "{" in text else None

    info = wait_for(client_saw, 60, "client-1 to reach web.default.svc")
    # The NetworkPolicy admits the clients only: the intruder's connections are refused.
    intruder = wait_for(
        lambda: next(
            (
                p["status"].get("podIP")
                for p in kube.list("v1", "pods", "default", label_selector="app=intruder")
                if p.get("status")
            ),
            None,
        ),
        30,
        "the intruder's address",
    )
    wait_for(lambda: any(client == intruder for client, _ in runner.refused()), 30, "the intruder refused")
    assert "{" not in runner.logs("default", "intruder-0", "intruder") and "retrying" in runner.logs(
        "default", "intruder-0", "intruder"
    )
    assert (info["uid"], info["gid"], info["groups"], info["pid"]) == (10001, 10001, [10001, 20000], 1)
    assert info["hostname"] == web["metadata"]["name"] and info["env"]["GREETING"] == f"hello {web['metadata']['name']}"
    assert info["env"]["PATH"] == images.WORKLOAD.env["PATH"] and "PYTEST_CURRENT_TEST" not in info["env"]
    assert info["root_write"] == 30, "the root file system is read-only (EROFS)"
    assert info["data"] == ["mine"], "an emptyDir of its own"
    assert (
        f"{service['spec']['clusterIP']}\tweb.default.svc.cluster.local web.default.svc web.default web"
        in info["hosts"]
    )

    # The clients exit 3, and restartPolicy Always restarts them, with the exit code in lastState.
    def restarted() -> dict[str, Any] | None:
        p = kube.get("v1", "pods", "default", "client-0")
        statuses = ((p or {}).get("status") or {}).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 2 else None

    status = wait_for(restarted, 60, "client-0 restarted twice")
    assert status["lastState"]["terminated"]["exitCode"] == 3 and status["lastState"]["terminated"]["reason"] == "Error"
    sts = kube.get("apps/v1", "statefulsets", "default", "client")
    assert sts["status"]["updateRevision"].startswith("client-") and sts["status"]["observedGeneration"] == 1

    # Killing the container's PID 1 ends its PID namespace; scaling down and deleting stop the rest.
    pid = runner.container_pid("default", web["metadata"]["name"])
    assert pid is not None and runner.processes("default", {"app": "web"})
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            (p := kube.get("v1", "pods", "default", web["metadata"]["name"]))
            and p["status"]["containerStatuses"][0]["restartCount"] == 1
            and p["status"]["containerStatuses"][0].get("lastState", {}).get("terminated", {}).get("exitCode") == 137
        ),
        30,
        "the web container restarted after SIGKILL",
    )
    kube.patch("apps/v1", "statefulsets", "default", "client", {"spec": {"replicas": 1}})
    wait_for(
        lambda: (
            [p["metadata"]["name"] for p in kube.list("v1", "pods", "default", label_selector="app=client")]
            == ["client-0"]
        ),
        30,
        "client-1 removed",
    )
    wait_for(
        lambda: set(runner.processes("default", {"app": "client"}).values()) <= {"default/client-0"},
        30,
        "client-1's processes ended",
    )
    kube.delete("apps/v1", "deployments", "default", "web")
    wait_for(lambda: not kube.list("v1", "pods", "default", label_selector="app=web"), 30, "the web pod removed")
    assert not runner.processes("default", {"app": "web"}) and not kube.list("apps/v1", "replicasets", "default")


IMPORTS = textwrap.dedent("""
    import json, os, kubeflower_operator, kubeflower_workload
    app = os.path.join(kubeflower_workload.__path__[0], "flowerapp", "pyproject.toml")
    print(json.dumps({"app": os.path.isfile(app), "covered": sorted(os.listdir(os.environ["COVERED"]))}), flush=True)
""")


@pytest.mark.e2e
def test_a_volume_over_the_checkout_leaves_the_installation_in_place(node: tuple[KubeServer, PodRunner]) -> None:
    """An emptyDir over a directory that holds the venv and the sources (the operator's at /tmp,
    the checkout cloned in /tmp): the non-root container still runs the venv's scripts, which
    import the project from the checkout (editable install)."""
    kube, runner = node
    checkout = Path(__file__).resolve().parents[2]
    command = f"kubeflower --help >/dev/null && python -c {shlex.quote(IMPORTS)} && sleep 600"
    kube.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "covered"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "covered"}},
                "template": {
                    "metadata": {"labels": {"app": "covered"}},
                    "spec": {
                        "securityContext": {"runAsUser": 10001, "runAsNonRoot": True},
                        "terminationGracePeriodSeconds": 1,
                        "volumes": [{"name": "scratch", "emptyDir": {}}],
                        "containers": [
                            {
                                "name": "c",
                                "image": WORKLOAD,
                                "command": ["sh", "-c", command],
                                "env": [{"name": "COVERED", "value": str(checkout)}],
                                "volumeMounts": [{"name": "scratch", "mountPath": str(checkout)}],
                            }
                        ],
                    },
                },
            },
        }
    )
    logs = wait_for(
        lambda: '{"app"' in (text := runner.logs("default", "covered-0", "c")) and text,
        60,
        "the venv's kubeflower and python to run",
    )
    # The emptyDir holds nothing but the mount points of what is bound back into it.
    kept = sorted({p.relative_to(checkout).parts[0] for p in images.installations() if p.is_relative_to(checkout)})
    assert first_json(logs) == {"app": True, "covered": kept}, logs


WATCH_VOLUMES = textwrap.dedent("""
    import json, os, time
    def files(folder):
        return {n: open(os.path.join(folder, n)).read() for n in sorted(os.listdir(folder)) if not n.startswith(".")}
    while True:
        print(json.dumps({"secret": files("/etc/s"), "config": files("/etc/c")}), flush=True)
        time.sleep(0.5)
""")


@pytest.mark.e2e
def test_a_changed_secret_or_config_map_reaches_the_running_pods_volume(node: tuple[KubeServer, PodRunner]) -> None:
    """As a kubelet does: a key added, changed or removed in a mounted Secret or ConfigMap shows
    in the running container's folder, without a restart (a job's server finds a scale-up's new
    client keys so); the Secret's files keep their mode and the pod's fsGroup."""
    kube, runner = node

    def encoded(**values: str) -> dict[str, str]:
        return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}

    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": encoded(a="1", b="2")})
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "old"}})
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "reader"},
            "spec": {
                "securityContext": {"runAsUser": 10001, "runAsNonRoot": True, "fsGroup": 20000},
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o440}},
                    {"name": "c", "configMap": {"name": "c"}},
                ],
                "containers": [
                    {
                        "name": "c",
                        "image": WORKLOAD,
                        "command": ["python", "-c", WATCH_VOLUMES],
                        "volumeMounts": [
                            {"name": "s", "mountPath": "/etc/s", "readOnly": True},
                            {"name": "c", "mountPath": "/etc/c", "readOnly": True},
                        ],
                    }
                ],
            },
        }
    )

    def seen(expected: dict[str, Any]) -> bool:
        lines = [line for line in runner.logs("default", "reader", "c").splitlines() if line.startswith("{")]
        return bool(lines) and json.loads(lines[-1]) == expected

    wait_for(lambda: seen({"secret": {"a": "1", "b": "2"}, "config": {"x": "old"}}), 60, "the volumes' files")
    kube.patch("v1", "secrets", "default", "s", {"data": {**encoded(b="two", c="3"), "a": None}})
    kube.patch("v1", "configmaps", "default", "c", {"data": {"x": "new", "y": "added"}})
    wait_for(
        lambda: seen({"secret": {"b": "two", "c": "3"}, "config": {"x": "new", "y": "added"}}),
        60,
        "the changed Secret's and ConfigMap's files in the running pod",
    )
    status = kube.get("v1", "pods", "default", "reader")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0 and "running" in status["state"], status
    assert runner.kubelet is not None
    (sandbox,) = runner.kubelet.sandboxes.values()
    added = (sandbox.volumes["s"] / "c").stat()
    assert (added.st_mode & 0o777, added.st_gid) == (0o440, 20000)


RUNNER_SCRIPT = textwrap.dedent("""
    import operator, sys, time
    sys.path.insert(0, sys.argv[1])
    from testbed.kubeserver import KubeServer
    from testbed.podrunner import Network, PodRunner
    from tests.e2e.test_podrunner import workloads
    with Network() as net, KubeServer(host=net.gateway) as kube, PodRunner(kube, net) as runner:
        kube.create(workloads()[0])
        while not runner.processes():
            time.sleep(0.1)
        print(net.run_id, flush=True)
        time.sleep(600)
""")


@pytest.mark.e2e
def test_a_killed_test_run_leaves_processes_to_nobody(tmp_path: Path) -> None:
    """pytest killed mid-test: the pods' processes die with it, and the next run removes the rest."""
    if netns.missing_requirements():
        pytest.skip(netns.missing_requirements() or "")
    run = subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, str(Path(__file__).resolve().parents[2])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        run_id = (run.stdout.readline() if run.stdout else "").strip()
        assert run_id, "the runner did not start a pod"
        in_run = [n for n in netns.ip("netns", "list").split() if n.startswith(f"kfpr-{run_id}-")]
        assert in_run
        pids = {int(p) for n in in_run for p in netns.ip("netns", "pids", n).split()}
        assert pids
    finally:
        run.kill()
        run.wait(10)
    wait_for(lambda: not [p for p in pids if _alive(p)], 10, "the pods' processes killed with their runner")
    assert run_id in netns.remove_stale_runs()
    assert not [n for n in netns.ip("netns", "list").split() if n.startswith(f"kfpr-{run_id}")]
    assert not Path(f"/run/kfpr/{run_id}.json").exists()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
