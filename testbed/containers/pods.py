"""Pods as containers: the objects that `kubeflower render` gives, run in a real container engine.

A pod of a rendered Deployment or StatefulSet becomes one container started with what a kubelet
would give it: the command and environment that the pod runner's kubelet reading computes
(`tests.podrunner.podspec.launch`, with the downward API filled in: pod name, namespace, labels,
pod IP, resource fields), the image's own ENTRYPOINT/CMD/ENV read from the engine, the pod's user,
group and fsGroup, a read-only root, dropped capabilities and no new privileges as its
securityContext says, each emptyDir as a tmpfs of the pod's fsGroup (mode 2777 and executable, as
a kubelet's emptyDir with fsGroup), each secret volume as a read-only bind mount of a host folder
with the Secret's files (defaultMode, group fsGroup), each configMap volume likewise (an optional
ConfigMap that does not exist is an empty folder, as a kubelet mounts it), the memory and CPU
limits, the pod's grace period as the stop timeout, and the pod name as hostname.

Where it differs from a cluster, knowingly: one user-defined bridge network with an address per
pod; Service names resolve through /etc/hosts entries (--add-host) to the server pod's address, so
a Service port must equal its target port (the operator's Services keep them equal); no probes,
restarts or NetworkPolicies (the pod runner's e2e tests cover those); where the image has a folder
at a tmpfs's mount point, Docker copies that folder's mode onto the tmpfs, so the tmpfs is owned
by the container's user as well (a kubelet's emptyDir is root's, mode 2777); an unsupported spec raises
`podspec.Unsupported` rather than running something else.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.containers.engine import Docker
from testbed.podrunner import podspec
from testbed.podrunner.netns import choose_subnet

Obj = dict[str, Any]
LABEL = "io.kubeflower.test"
"""Label of everything these tests create in the engine, to clean up after a killed run."""


def pods_of(workload: Obj) -> list[Obj]:
    """The pods a Deployment (one) or StatefulSet (`replicas`, named by ordinal) would have."""
    template = workload["spec"]["template"]
    name, namespace = workload["metadata"]["name"], workload["metadata"].get("namespace", "default")
    if workload["kind"] == "StatefulSet":
        names = [f"{name}-{i}" for i in range(int(workload["spec"].get("replicas", 1)))]
    else:
        names = [f"{name}-{secrets.token_hex(4)}-{secrets.token_hex(2)}"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": n,
                "namespace": namespace,
                "labels": dict(template["metadata"].get("labels") or {}),
                "uid": secrets.token_hex(8),
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        for n in names
    ]


def service_hosts(service: Obj) -> list[str]:
    """The DNS names a Service answers to from a pod of its namespace."""
    name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def run_arguments(
    pod: Obj,
    launch: podspec.Launch,
    image: str,
    *,
    network: str,
    address: str,
    hosts: dict[str, str],
    name: str,
    secret_dirs: Mapping[str, Path] = {},
) -> list[str]:
    """`docker run` arguments for the pod's (only) container, as a kubelet would start it.

    `secret_dirs`: the host folder holding each secret or configMap volume's files."""
    spec = pod["spec"]
    container = spec["containers"][0]
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    empty_dirs = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
    other = [v["name"] for v in spec.get("volumes") or [] if "emptyDir" not in v and v["name"] not in secret_dirs]
    if other:
        raise podspec.Unsupported(f"volumes {other}: only emptyDir, secret and configMap volumes are modelled here")
    args = [
        "run",
        "--detach",
        "--name",
        name,
        "--hostname",
        pod["metadata"]["name"],
        "--label",
        LABEL,
        "--network",
        network,
        "--ip",
        address,
        "--user",
        f"{launch.uid}:{launch.gid}",
        "--workdir",
        launch.workdir,
        "--stop-timeout",
        str(spec.get("terminationGracePeriodSeconds", 30)),
    ]
    args += [a for g in launch.groups if g != launch.gid for a in ("--group-add", str(g))]
    args += [a for host, ip in hosts.items() for a in ("--add-host", f"{host}:{ip}")]
    if launch.read_only_root:
        args.append("--read-only")
    if launch.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    if launch.drop_capabilities:
        args += ["--cap-drop", "ALL"]
    for mount in launch.mounts:
        if mount["name"] in empty_dirs:
            group = fs_group if fs_group is not None else launch.gid
            args += ["--tmpfs", f"{mount['mountPath']}:exec,mode=2777,uid={launch.uid},gid={group}"]
        elif mount["name"] in secret_dirs:  # a kubelet's secret/configMap volume is read-only whatever the mount says
            args += ["--mount", f"type=bind,src={secret_dirs[mount['name']]},dst={mount['mountPath']},readonly"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", str(int(podspec.quantity(limits["memory"])))]
    if "cpu" in limits:
        args += ["--cpus", str(podspec.quantity(limits["cpu"]))]
    args += [a for k, v in launch.env.items() for a in ("--env", f"{k}={v}")]
    return [*args, "--entrypoint", launch.argv[0], image, *launch.argv[1:]]


@dataclass
class Started:
    pod: Obj
    container: str
    address: str


@dataclass
class PodNetwork:
    """A bridge network of the engine and the pods started on it, removed on exit."""

    docker: Docker
    name: str = field(default_factory=lambda: f"kfimg-{secrets.token_hex(3)}")
    subnet: ipaddress.IPv4Network = field(default_factory=choose_subnet)
    hosts: dict[str, str] = field(default_factory=dict)
    started: list[Started] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    """Host folders of the pods' secret and configMap volumes, removed on exit."""

    def __post_init__(self) -> None:
        self._free = iter(list(self.subnet.hosts())[1:])  # .1 is the bridge (the host's side)

    def start(self, pod: Obj, *, services: Sequence[Obj] = (), secret_objects: Sequence[Obj] = ()) -> Started:
        """Run the pod; the Services listed select it and resolve to its address from now on; its
        secret volumes are made from the Secrets listed (their files in a host folder, as a kubelet
        writes them: defaultMode, group fsGroup)."""
        address = str(next(self._free))
        pod.setdefault("status", {})["podIP"] = address
        for service in services:
            self.hosts.update(dict.fromkeys(service_hosts(service), address))
        container = pod["spec"]["containers"][0]
        image = self.docker.image_metadata(container["image"])
        launch = podspec.launch(pod, container, image, lambda *_: None)
        name = f"{self.name}-{pod['metadata']['name']}"
        secret_dirs = self._secret_volumes(pod, {s["metadata"]["name"]: s for s in secret_objects})
        self.docker(
            *run_arguments(
                pod,
                launch,
                container["image"],
                network=self.name,
                address=address,
                hosts=self.hosts,
                name=name,
                secret_dirs=secret_dirs,
            )
        )
        started = Started(pod, name, address)
        self.started.append(started)
        return started

    def _secret_volumes(self, pod: Obj, secrets: Mapping[str, Obj]) -> dict[str, Path]:
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        folders: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            if "secret" in volume:
                source = volume["secret"]
                secret = secrets.get(source["secretName"])
                if secret is None:
                    raise podspec.ConfigError(f"secrets {source['secretName']!r} not found")
                files = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
            elif "configMap" in volume:  # none is given: only an optional one (absent: an empty folder)
                source = volume["configMap"]
                if not source.get("optional"):
                    raise podspec.ConfigError(f"configmaps {source['name']!r} not found")
                files = {}
            else:
                continue
            folder = Path(tempfile.mkdtemp(prefix="kfimg-secret-"))
            self.folders.append(folder)
            folder.chmod(0o755)
            for key, value in files.items():
                path = folder / key
                path.write_bytes(value)
                path.chmod(int(source.get("defaultMode", 0o644)))
                if fs_group is not None:
                    os.chown(path, -1, int(fs_group))
            folders[volume["name"]] = folder
        return folders

    def stop(self, started: Started) -> tuple[int, float]:
        """`docker stop` with the pod's grace period: the exit code and the seconds it took."""
        begin = time.monotonic()
        self.docker("stop", started.container, timeout=120)
        seconds = time.monotonic() - begin
        state = self.docker.inspect("container", started.container)["State"]
        return int(state["ExitCode"]), seconds

    def logs(self, started: Started) -> str:
        return self.docker.logs(started.container)

    def __enter__(self) -> PodNetwork:
        self.docker("network", "create", "--label", LABEL, "--subnet", str(self.subnet), self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        for started in self.started:
            self.docker("rm", "--force", started.container, check=False)
        self.docker("network", "rm", self.name, check=False)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
