"""The kubelet: runs the Pod objects of the API test server as local processes and reports on them.

For each pod: a sandbox (its network namespace and address, /etc/hosts, resolv.conf and
hostname, its volumes as host directories), then each container through `processes` (as the
pod's user, PID 1 of its own PID namespace, with its volumes at their mountPaths and a read-only
root when asked), restarted as `restartPolicy` says with CrashLoopBackOff delays, probed
(startup, readiness, liveness) from the node, and reported in the Pod's status: phase,
conditions (Ready ...), podIP, and per container ready, started, restartCount, state and
lastState (running / waiting with a reason / terminated with exitCode and reason).

Deleting a pod is graceful, as on a node: SIGTERM to each container, SIGKILL after the pod's
`terminationGracePeriodSeconds` (default 30), then the sandbox goes. The API test server deletes
objects at once, so the pods that `pods` creates carry a finalizer (`FINALIZER`) that this
kubelet removes once the containers have exited: a pod stays Terminating, with its processes,
until then, as in a cluster.

Volumes: emptyDir (a fresh directory, mode 0777, group fsGroup), persistentVolumeClaim (a folder
per claim under the runner's work folder, made on first use like an emptyDir and never removed with a
pod: `claim_folder`; the claim object must exist), configMap and secret (their keys as files,
defaultMode; one whose object is missing, unless `optional`, keeps its container waiting in
`ContainerCreating` and is tried again, as a kubelet does; so does a missing claim, and a missing key
an item names), projected (its secret and configMap sources' files in one folder), hostPath
(bind-mounted). Mount points missing on the machine are made inside the container's mount namespace
only (`MountPoints`). Other volume types,
subPath, init and ephemeral containers, exec probes and lifecycle hooks raise `Unsupported`
(recorded in the runner's errors): never skipped in silence.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testbed.podrunner import images, podspec, probes
from testbed.podrunner.netns import RESOLV_CONF, Netns, Network
from testbed.podrunner.processes import ContainerProcess, CrashLoopBackOff
from testbed.podrunner.services import hosts_file

Obj = dict[str, Any]
log = logging.getLogger(__name__)
FINALIZER = "podrunner.test/kubelet"
NODE_LABELS = {"kubernetes.io/hostname": podspec.NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
DEFAULT_GRACE = 30


class MountPoints:
    """Where a container's volumes are mounted, made without touching the machine's file system.

    A mount point under an earlier mount of the container is made in that volume's directory.
    One that does not exist on the machine is made inside the container: its deepest existing
    parent (never `/`) is overlaid with a tmpfs into which the sandbox binds back every entry of
    the original, then the missing directories are made there. A file system shared with other
    test runs is thus never changed.
    """

    def __init__(self) -> None:
        self.overlays: list[str] = []
        self.mkdirs: list[str] = []
        self.touch: list[str] = []

    def add(self, target: str, is_dir: bool, earlier: list[Obj]) -> None:
        for mount in sorted(earlier, key=lambda m: len(m["target"]), reverse=True):
            prefix = mount["target"].rstrip("/") + "/"
            if target.startswith(prefix):
                inside = Path(mount["source"]) / target[len(prefix) :]
                if is_dir:
                    inside.mkdir(parents=True, exist_ok=True)
                else:
                    inside.parent.mkdir(parents=True, exist_ok=True)
                    inside.touch()
                return
        path = Path(target)
        if path.exists():
            return
        parent = next(p for p in path.parents if p.exists())
        if parent == Path("/"):
            raise podspec.Unsupported(f"mountPath {target}: a new top-level directory")
        if str(parent) not in self.overlays:
            self.overlays.append(str(parent))
        if is_dir:
            self.mkdirs.append(target)
        else:
            self.mkdirs.append(str(path.parent))
            self.touch.append(target)


def claim_folder(workdir: Path, namespace: str, claim: str) -> Path:
    """Where a PersistentVolumeClaim's volume lives: a folder of the runner's that outlives the pods."""
    return workdir / "claims" / namespace / claim


def timestamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    spec: Obj
    backoff: CrashLoopBackOff
    restart_count: int = 0
    process: ContainerProcess | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: Obj | None = None
    """The current state while the container is not running and will not be restarted now."""
    last_terminated: Obj | None = None
    next_start: float = 0.0
    done: bool = False
    """Ended for good (restartPolicy Never/OnFailure)."""
    probers: dict[str, probes.Prober] = field(default_factory=dict)
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        if not self.running or ("startup" in self.probers and not self.probers["startup"].passed):
            return False
        return self.probers["readiness"].passed if "readiness" in self.probers else True

    @property
    def started(self) -> bool:
        return self.running and ("startup" not in self.probers or self.probers["startup"].passed)


@dataclass
class Sandbox:
    uid: str
    pod: Obj
    netns: Netns | None = None
    volumes: dict[str, Path] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    started_at: float = 0.0
    terminating: bool = False
    transitions: dict[str, tuple[str, float]] = field(default_factory=dict)
    written: Obj | None = None
    unschedulable: str = ""

    @property
    def namespace(self) -> str:
        return self.pod["metadata"].get("namespace", "default")

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]


class Kubelet:
    def __init__(
        self,
        kube: Any,
        network: Network,
        workdir: Path,
        log_dir: Path,
        record_error: Callable[[str], None],
        backoff: float = 10.0,
    ) -> None:
        self.kube, self.network, self.workdir, self.log_dir = kube, network, workdir, log_dir
        self.record_error = record_error
        self.backoff = backoff
        self.sandboxes: dict[str, Sandbox] = {}
        self.netns_inodes: dict[int, tuple[str, str, dict[str, str]]] = {}
        """Inode of every network namespace made for a pod -> (namespace, name, labels): finds
        a pod's processes in /proc, also after the runner has forgotten the pod."""
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._probe_results: list[tuple[probes.Prober, Future[tuple[bool, str]]]] = []
        self._hosts_inputs: tuple[list[Obj], list[Obj]] = ([], [])

    # The loop's entry points.

    def sync(self, pods: list[Obj], services: list[Obj]) -> None:
        self._hosts_inputs = (services, pods)
        self._collect_probes()
        seen = set()
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") not in (None, "", podspec.NODE_NAME):
                continue
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            try:
                self._sync_pod(pod)
            except Exception:
                self.record_error(
                    f"pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']}: {traceback.format_exc()}"
                )
        for uid in set(self.sandboxes) - seen:
            # Gone from the API without our finalizer (forced): stop at once, as a kubelet does.
            sandbox = self.sandboxes[uid]
            for c in sandbox.containers.values():
                if c.process:
                    c.process.kill_and_wait()
            self._teardown(sandbox)

    def close(self, grace: float = 2.0) -> None:
        """Stop every container (SIGTERM, SIGKILL after `grace`) and remove every sandbox."""
        for sandbox in self.sandboxes.values():
            for c in sandbox.containers.values():
                if c.running and c.process:
                    c.process.terminate(grace)
        deadline = time.time() + grace
        while time.time() < deadline and any(c.running for s in self.sandboxes.values() for c in s.containers.values()):
            time.sleep(0.05)
        for sandbox in list(self.sandboxes.values()):
            for c in sandbox.containers.values():
                if c.process:
                    c.process.kill_and_wait()
            self._teardown(sandbox)
        self._probes.shutdown(wait=False, cancel_futures=True)

    # One pod.

    def _sync_pod(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        sandbox = self.sandboxes.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate(sandbox, pod)
            return
        if sandbox is None:
            sandbox = self.sandboxes[uid] = Sandbox(uid, pod, started_at=time.time())
        sandbox.pod = pod
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        unmatched = {k: v for k, v in selector.items() if NODE_LABELS.get(k) != v}
        if unmatched:
            sandbox.unschedulable = (
                f"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector ({unmatched})"
            )
            self._write_status(sandbox)
            return
        sandbox.unschedulable = ""
        if sandbox.netns is None:
            self._create_sandbox(sandbox)
        spec = pod.get("spec") or {}
        for unsupported in ("initContainers", "ephemeralContainers"):
            if spec.get(unsupported):
                raise podspec.Unsupported(unsupported)
        for container_spec in spec.get("containers") or []:
            name = container_spec["name"]
            if name not in sandbox.containers:
                sandbox.containers[name] = Container(container_spec, CrashLoopBackOff(self.backoff))
            self._sync_container(sandbox, sandbox.containers[name])
        self._write_hosts(sandbox)
        self._write_status(sandbox)

    def _sync_container(self, sandbox: Sandbox, c: Container) -> None:
        now = time.time()
        policy = (sandbox.pod.get("spec") or {}).get("restartPolicy", "Always")
        if c.process is not None and not c.running and c.terminated is None and c.process.exit_code is not None:
            code = c.process.exit_code
            c.terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": timestamp(c.process.started_at),
                "finishedAt": timestamp(c.process.finished_at),
                "containerID": f"podrunner://{sandbox.uid}/{c.spec['name']}/{c.starts}",
            }
            if code >= 128:
                with contextlib.suppress(ValueError):
                    c.terminated["signal"] = code - 128
                    c.terminated["message"] = f"killed by {signal.Signals(code - 128).name}"
            c.probers = {}
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                c.next_start = c.process.finished_at + c.backoff.delay(c.process.finished_at)
            else:
                c.done = True
        if c.process is not None and c.running:
            c.process.enforce()
            self._probe(sandbox, c, now)
            return
        if c.done or now < c.next_start:
            if not c.done and c.terminated is not None:
                delay = round(c.next_start - c.process.finished_at) if c.process else 0
                c.waiting = (
                    "CrashLoopBackOff",
                    f"back-off {delay}s restarting failed container={c.spec['name']} pod={sandbox.name}",
                )
            return
        self._start(sandbox, c)

    def _start(self, sandbox: Sandbox, c: Container) -> None:
        assert sandbox.netns is not None
        image = images.find(c.spec.get("image", ""))
        if image is None:
            c.waiting = (
                "ErrImageNeverPull",
                f"image {c.spec.get('image')!r} is not on this node (testbed/podrunner/images.py)",
            )
            return
        pod = {
            **sandbox.pod,
            "status": {
                **(sandbox.pod.get("status") or {}),
                "podIP": sandbox.netns.address,
                "hostIP": self.network.gateway,
            },
        }
        try:
            launch = podspec.launch(pod, c.spec, image, self._lookup)
        except podspec.ConfigError as exc:
            c.waiting = ("CreateContainerConfigError", str(exc))
            return
        for hook in ("lifecycle",):
            if c.spec.get(hook):
                raise podspec.Unsupported(f"containers[].{hook}")
        missing = self._missing_volumes(sandbox, {m["name"] for m in launch.mounts})
        if missing is not None:
            c.waiting = ("ContainerCreating", missing)
            return
        mounts: list[Obj] = []
        points = MountPoints()
        for target, folder in image.folders.items():  # the image's own files, before the pod's volumes
            points.add(target, True, mounts)
            mounts.append({"source": folder, "target": target, "readOnly": True})
        # Parents before children, as container runtimes mount them.
        for mount in sorted(launch.mounts, key=lambda m: len(Path(m["mountPath"]).parts)):
            source = sandbox.volumes[mount["name"]]
            points.add(mount["mountPath"], source.is_dir(), mounts)
            mounts.append({"source": str(source), "target": mount["mountPath"], "readOnly": mount["readOnly"]})
        if c.process is not None:  # a restart
            c.last_terminated = c.terminated
            c.restart_count += 1
        c.starts += 1
        c.terminated, c.waiting = None, None
        name = c.spec["name"]
        c.process = ContainerProcess(
            sandbox.netns.name,
            launch,
            mounts,
            hostname=(sandbox.pod.get("spec") or {}).get("hostname") or sandbox.name,
            rundir=self.workdir / "pods" / sandbox.uid / "containers" / name / str(c.starts),
            log=self.log_dir / f"{sandbox.namespace}_{sandbox.name}_{name}.log",
            files=images.account_files(image),
            mount_points=points,
        )
        c.process.start()
        started = c.process.started_at
        for kind in ("startup", "readiness", "liveness"):
            if c.spec.get(f"{kind}Probe"):
                c.probers[kind] = probes.Prober(kind, c.spec[f"{kind}Probe"], started)
        log.info("started %s/%s container %s (%s)", sandbox.namespace, sandbox.name, name, " ".join(launch.argv))

    def _probe(self, sandbox: Sandbox, c: Container, now: float) -> None:
        assert sandbox.netns is not None and c.process is not None
        startup = c.probers.get("startup")
        for kind, prober in c.probers.items():
            if kind != "startup" and startup is not None and not startup.passed:
                continue
            if prober.failed:
                grace = float((sandbox.pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))
                log.info(
                    "%s/%s container %s failed its %s probe (%s): restarting it",
                    sandbox.namespace,
                    sandbox.name,
                    c.spec["name"],
                    kind,
                    prober.last,
                )
                c.process.terminate(grace)
                prober.failed = False
                prober.next_at = float("inf")
                continue
            if prober.due(now):
                prober.in_flight = True
                future = self._probes.submit(probes.check, prober.probe, sandbox.pod, sandbox.netns.address)
                self._probe_results.append((prober, future))

    def _collect_probes(self) -> None:
        pending = []
        for prober, future in self._probe_results:
            if not future.done():
                pending.append((prober, future))
                continue
            try:
                ok, message = future.result()
            except podspec.Unsupported as exc:
                self.record_error(f"unsupported probe: {exc}")
                ok, message = False, str(exc)
            prober.record(ok, message, time.time())
        self._probe_results = pending

    def _terminate(self, sandbox: Sandbox | None, pod: Obj) -> None:
        """A pod being deleted: stop its containers gracefully, remove its sandbox, then let it go."""
        if sandbox is not None:
            sandbox.pod, sandbox.terminating = pod, True
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))
            for c in sandbox.containers.values():
                if c.running and c.process:
                    c.process.terminate(grace)
                    c.process.enforce()
            if any(c.running for c in sandbox.containers.values()):
                return
            for c in sandbox.containers.values():
                if c.process:
                    c.process.kill_and_wait()  # reap the shim
            self._teardown(sandbox)
        finalizers = pod["metadata"].get("finalizers") or []
        if FINALIZER in finalizers:
            rest = [f for f in finalizers if f != FINALIZER]
            with contextlib.suppress(Exception):  # gone already: nothing to do
                self.kube.patch(
                    "v1",
                    "pods",
                    pod["metadata"].get("namespace"),
                    pod["metadata"]["name"],
                    {"metadata": {"finalizers": rest or None, "resourceVersion": pod["metadata"]["resourceVersion"]}},
                )

    # The sandbox.

    def _create_sandbox(self, sandbox: Sandbox) -> None:
        pod = sandbox.pod
        netns = self.network.add(f"{sandbox.namespace}.{sandbox.name}")
        sandbox.netns = netns
        self.netns_inodes[os.stat(f"/var/run/netns/{netns.name}").st_ino] = (
            sandbox.namespace,
            sandbox.name,
            dict(pod["metadata"].get("labels") or {}),
        )
        spec = pod.get("spec") or {}
        hostname = spec.get("hostname") or sandbox.name
        netns.write_etc("resolv.conf", RESOLV_CONF.format(namespace=sandbox.namespace))
        netns.write_etc("hostname", hostname + "\n")
        self._write_hosts(sandbox)
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        root = self.workdir / "pods" / sandbox.uid / "volumes"
        for volume in spec.get("volumes") or []:
            with contextlib.suppress(podspec.ConfigError):  # its Secret or ConfigMap missing: retried by `_start`
                sandbox.volumes[volume["name"]] = self._volume(
                    root / volume["name"], volume, sandbox.namespace, fs_group
                )

    def _missing_volumes(self, sandbox: Sandbox, names: set[str]) -> str | None:
        """Prepare the volumes that could not be yet (a Secret or ConfigMap not found, as when its
        owner is being deleted); why one still cannot be, or None. A kubelet waits and retries too."""
        spec = sandbox.pod.get("spec") or {}
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        root = self.workdir / "pods" / sandbox.uid / "volumes"
        for volume in spec.get("volumes") or []:
            if volume["name"] in names and volume["name"] not in sandbox.volumes:
                try:
                    sandbox.volumes[volume["name"]] = self._volume(
                        root / volume["name"], volume, sandbox.namespace, fs_group
                    )
                except podspec.ConfigError as exc:
                    return f"MountVolume.SetUp failed for volume {volume['name']!r}: {exc}"
        return None

    def _volume(self, path: Path, volume: Obj, namespace: str, fs_group: int | None) -> Path:
        if "emptyDir" in volume:
            _group_writable_folder(path, fs_group)
            return path
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        if "persistentVolumeClaim" in volume:
            name = volume["persistentVolumeClaim"]["claimName"]
            if self._lookup("persistentvolumeclaims", namespace, name) is None:
                raise podspec.ConfigError(f'persistentvolumeclaim "{name}" not found')
            claim = claim_folder(self.workdir, namespace, name)
            if not claim.exists():  # a fresh volume, as a provisioner makes it: writable by the pod's group
                _group_writable_folder(claim, fs_group)
            return claim
        if "projected" in volume:
            return self._projected(path, volume, namespace, fs_group)
        for key, plural in (("configMap", "configmaps"), ("secret", "secrets")):
            if key in volume:
                source = volume[key]
                name = source.get("name") or source.get("secretName")
                obj = self._lookup(plural, namespace, name)
                if obj is None and not source.get("optional"):
                    raise podspec.ConfigError(f"{plural} {name!r} not found")
                data = {
                    k: (base64.b64decode(v) if plural == "secrets" else str(v).encode())
                    for k, v in ((obj or {}).get("data") or {}).items()
                }
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                absent = [item["key"] for item in items if item["key"] not in data]
                if absent and not source.get("optional"):  # a kubelet's FailedMount, retried
                    raise podspec.ConfigError(f"couldn't find key {absent[0]} in {plural} {name!r}")
                path.mkdir(parents=True)
                path.chmod(0o755)
                for item in (i for i in items if i["key"] in data):
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
                    target.chmod(int(item.get("mode", source.get("defaultMode", 0o644))))
                    if fs_group is not None:
                        os.chown(target, -1, int(fs_group))
                return path
        raise podspec.Unsupported(f"volume {volume['name']}: {sorted(k for k in volume if k != 'name')}")

    def _projected(self, path: Path, volume: Obj, namespace: str, fs_group: int | None) -> Path:
        """A projected volume of Secrets and ConfigMaps: each source's files (its `items`, else all
        its keys) in one folder, with the volume's defaultMode unless an item names its own."""
        projected = volume["projected"]
        mode = {"defaultMode": projected["defaultMode"]} if "defaultMode" in projected else {}
        staged = []
        try:
            for index, source in enumerate(projected.get("sources") or []):
                kinds = [k for k in ("secret", "configMap") if k in source]
                if len(kinds) != 1:
                    raise podspec.Unsupported(f"volume {volume['name']}: projected source {sorted(source)}")
                staged.append(path.parent / f".{path.name}-{index}")
                one = {"name": volume["name"], kinds[0]: {**source[kinds[0]], **mode}}
                self._volume(staged[-1], one, namespace, fs_group)
            path.mkdir(parents=True)
            path.chmod(0o755)
            for folder in staged:
                for entry in folder.iterdir():
                    entry.rename(path / entry.name)
        finally:  # a source not found yet: nothing is left, the next try starts afresh
            for folder in staged:
                shutil.rmtree(folder, ignore_errors=True)
        return path

    def _teardown(self, sandbox: Sandbox) -> None:
        if sandbox.netns is not None:
            self.network.remove(sandbox.netns)
            sandbox.netns = None
        shutil.rmtree(self.workdir / "pods" / sandbox.uid / "volumes", ignore_errors=True)  # emptyDirs die with the pod
        self.sandboxes.pop(sandbox.uid, None)

    def _lookup(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.kube.get("v1", plural, namespace, name)

    def _write_hosts(self, sandbox: Sandbox) -> None:
        if sandbox.netns is None:
            return
        services, pods = self._hosts_inputs
        hostname = (sandbox.pod.get("spec") or {}).get("hostname") or sandbox.name
        sandbox.netns.write_etc("hosts", hosts_file(sandbox.netns.address, hostname, sandbox.namespace, services, pods))

    # The status.

    def _condition(self, sandbox: Sandbox, type_: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        status = "True" if ok else "False"
        previous = sandbox.transitions.get(type_)
        if previous is None or previous[0] != status:
            sandbox.transitions[type_] = (status, time.time())
        condition = {
            "type": type_,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": timestamp(sandbox.transitions[type_][1]),
        }
        if reason:
            condition.update(reason=reason, message=message)
        return condition

    def _container_status(self, sandbox: Sandbox, c: Container) -> Obj:
        state: Obj
        if c.running and c.process is not None:
            state = {"running": {"startedAt": timestamp(c.process.started_at)}}
        elif c.terminated is not None and (c.done or c.waiting is None or c.waiting[0] != "CrashLoopBackOff"):
            state = {"terminated": c.terminated}
        else:
            reason, message = c.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        status = {
            "name": c.spec["name"],
            "image": c.spec.get("image", ""),
            "imageID": f"podrunner://{c.spec.get('image', '')}",
            "ready": c.ready,
            "started": c.started,
            "restartCount": c.restart_count,
            "state": state,
            "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
        }
        if c.process is not None:
            status["containerID"] = f"podrunner://{sandbox.uid}/{c.spec['name']}/{c.starts}"
        return status

    def _write_status(self, sandbox: Sandbox) -> None:
        spec = sandbox.pod.get("spec") or {}
        containers = [
            sandbox.containers[c["name"]] for c in spec.get("containers") or [] if c["name"] in sandbox.containers
        ]
        if sandbox.unschedulable:
            status: Obj = {
                "phase": "Pending",
                "conditions": [self._condition(sandbox, "PodScheduled", False, "Unschedulable", sandbox.unschedulable)],
            }
        else:
            ready = bool(containers) and all(c.ready for c in containers)
            ever_started = any(c.starts for c in containers)
            if containers and all(c.done for c in containers):
                phase = "Succeeded" if all((c.terminated or {}).get("exitCode") == 0 for c in containers) else "Failed"
            else:
                phase = "Running" if ever_started else "Pending"
            not_ready = [c.spec["name"] for c in containers if not c.ready]
            why = (
                ("ContainersNotReady", f"containers with unready status: [{' '.join(not_ready)}]")
                if not_ready
                else ("", "")
            )
            status = {
                "phase": phase,
                "conditions": [
                    self._condition(sandbox, "PodReadyToStartContainers", sandbox.netns is not None),
                    self._condition(sandbox, "Initialized", True),
                    self._condition(sandbox, "Ready", ready, *why),
                    self._condition(sandbox, "ContainersReady", ready, *why),
                    self._condition(sandbox, "PodScheduled", True),
                ],
                "hostIP": self.network.gateway,
                "hostIPs": [{"ip": self.network.gateway}],
                "podIP": sandbox.netns.address if sandbox.netns else None,
                "podIPs": [{"ip": sandbox.netns.address}] if sandbox.netns else None,
                "startTime": timestamp(sandbox.started_at),
                "qosClass": _qos(spec),
                "containerStatuses": [self._container_status(sandbox, c) for c in containers],
            }
        if status == sandbox.written:
            return
        try:
            self.kube.patch_status("v1", "pods", sandbox.namespace, sandbox.name, status)
            sandbox.written = status
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise

    # For the tests.

    def pod_processes(self) -> dict[int, tuple[str, str, dict[str, str]]]:
        """Every live process on the machine that runs in a pod's network namespace -> that pod."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                inode = os.stat(entry / "ns" / "net").st_ino
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if inode in self.netns_inodes and stat[stat.rindex(")") + 2] != "Z":
                found[int(entry.name)] = self.netns_inodes[inode]
        return found


def _qos(spec: Obj) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {})[k]) == (r.get("limits") or {})[k]
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _group_writable_folder(path: Path, fs_group: int | None) -> None:
    """A new volume folder as a kubelet's emptyDir (or a fresh provisioned claim): mode 0777, or
    owned by the pod's fsGroup with the setgid bit (2777) when it has one."""
    path.mkdir(parents=True)
    path.chmod(0o777)
    if fs_group is not None:
        os.chown(path, -1, int(fs_group))
        path.chmod(0o2777)
