"""The pods' network: one Linux bridge in the root namespace and one network namespace per pod.

`Network` picks a private /24 that collides with no address or route of the machine
(10.x.y.0/24 with x and y random), puts the bridge in the root namespace on its `.1` (the
node's address: the API test server listens there, the kubelet's probes come from there) and
gives each pod a namespace with a veth pair (`eth0` inside, its address from the /24) and
`/etc/netns/NAME/{hosts,resolv.conf,hostname}`, which `ip netns exec` bind-mounts over the
pod's `/etc` files. Pods get no default route: they reach each other, the node and the
Services' addresses, and nothing outside (this machine has no network anyway).

Every name carries the run's id (`kfpr<id>` for links, `kfpr-<id>-...` for namespaces), and a
record in /run/kfpr/<id>.json names the process that owns it. `Network()` first removes what
earlier runs left behind (their owner no longer alive) -- only names with our prefix -- and its
exit removes everything it created, also when the test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PREFIX = "kfpr"
RECORDS = Path("/run/kfpr")
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
RESOLV_CONF = """# testbed/podrunner: there is no cluster DNS; the Services' names are in /etc/hosts.
search {namespace}.svc.cluster.local svc.cluster.local cluster.local
nameserver 127.0.0.1
options ndots:5 timeout:1 attempts:1
"""
"""A pod's resolv.conf: the search path of a cluster's, and a nameserver that answers nothing at
once (nothing listens on the pod's own port 53), so that names not in /etc/hosts fail fast."""


class NetworkError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def missing_requirements() -> str | None:
    """Why pods cannot run as local processes on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "the e2e tests need root (network namespaces, mounts, other users)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"{PREFIX}-probe-{secrets.token_hex(3)}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"`ip netns add` fails here: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


# The record of a run: what it created, so that a later run can remove it if this one died.


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _record_path(run_id: str) -> Path:
    return RECORDS / f"{run_id}.json"


def _alive(run_id: str) -> bool:
    try:
        record = json.loads(_record_path(run_id).read_text())
    except (OSError, ValueError):
        return False
    return _start_time(record["pid"]) == record["start"]


def _run_ids() -> set[str]:
    """Ids of runs that left something here: records, namespaces, links, /etc/netns folders."""
    ids = set()
    if RECORDS.is_dir():
        ids |= {p.stem for p in RECORDS.glob("*.json")}
    for name in [*ip("netns", "list", check=False).split("\n"), *_dir_names(ETC_NETNS)]:
        if m := re.match(rf"{PREFIX}-([0-9a-f]{{4}})-", name.split(" ")[0]):
            ids.add(m.group(1))
    for link in _links():
        if m := re.match(rf"{PREFIX}([0-9a-f]{{4}})", link):
            ids.add(m.group(1))
    return ids


def _dir_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


def _links() -> list[str]:
    names = []
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_namespace_processes(netns: str) -> None:
    for pid in ip("netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def remove_run(run_id: str) -> None:
    """Remove every namespace, link and folder that the run `run_id` created."""
    record: dict = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(_record_path(run_id).read_text())
    namespaces = [n.split(" ")[0] for n in ip("netns", "list", check=False).splitlines()]
    for netns in namespaces:
        if netns.startswith(f"{PREFIX}-{run_id}-"):
            _kill_namespace_processes(netns)
            ip("netns", "del", netns, check=False)
    for link in _links():
        if link.startswith(f"{PREFIX}{run_id}"):
            ip("link", "del", link, check=False)
    for name in _dir_names(ETC_NETNS):
        if name.startswith(f"{PREFIX}-{run_id}-"):
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    if record.get("workdir"):
        shutil.rmtree(record["workdir"], ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        _record_path(run_id).unlink()


def remove_stale_runs() -> list[str]:
    """Remove what earlier runs whose process is gone left behind; their ids."""
    stale = [run_id for run_id in sorted(_run_ids()) if not _alive(run_id)]
    for run_id in stale:
        remove_run(run_id)
    return stale


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for line in ip("-4", "-o", "addr", "show", check=False).splitlines():
        if m := re.search(r"inet (\S+)", line):
            used.append(ipaddress.ip_interface(m.group(1)).network)
    for line in ip("-4", "route", "show", "table", "all", check=False).splitlines():
        target = line.split()[0] if line.split() else ""
        if target in ("default", "broadcast", "local", "unreachable", "multicast"):
            target = line.split()[1] if len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(target, strict=False)
            if network.prefixlen > 0:
                used.append(network)
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            if line.startswith("nameserver"):
                with contextlib.suppress(ValueError, IndexError):
                    used.append(ipaddress.ip_network(line.split()[1]))
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)]


def choose_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no address, route or nameserver of this machine."""
    used = _used_networks()
    for _ in range(500):
        candidate = ipaddress.IPv4Network(f"10.{random.randint(16, 250)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise NetworkError("no free 10.x.y.0/24 for the pods' network")


@dataclass
class Netns:
    """One pod's network namespace."""

    name: str
    address: str
    host_veth: str
    etc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.etc = ETC_NETNS / self.name

    def write_etc(self, filename: str, content: str) -> None:
        """Write /etc/<filename> of the pod, in place: the pod's bind mount keeps seeing the file."""
        path = self.etc / filename
        if path.exists() and path.read_text() == content:
            return
        with open(path, "r+" if path.exists() else "w") as f:
            f.write(content)
            f.truncate()

    @contextlib.contextmanager
    def entered(self) -> object:
        """Move the calling thread (only it) into this namespace for the `with` block."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(NETNS_DIR / self.name, os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise NetworkError(f"setns {self.name}: {os.strerror(ctypes.get_errno())}")
            yield self
        finally:
            libc.setns(own, CLONE_NEWNET)
            os.close(own)
            os.close(target)


class Network:
    """The bridge, the address plan and the namespaces of one run: `with Network() as net:`."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(2)
        self.bridge = f"{PREFIX}{self.run_id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.namespaces: dict[str, Netns] = {}
        self._pools: dict[str, list[str]] = {"pod": [], "service": []}
        self._count = 0
        self._lock = threading.Lock()
        self._record: dict = {}

    @property
    def gateway(self) -> str:
        """The node's address on the pods' network (the bridge's)."""
        assert self.subnet is not None, "use the Network as a context manager"
        return str(self.subnet.network_address + 1)

    @property
    def prefixlen(self) -> int:
        assert self.subnet is not None
        return self.subnet.prefixlen

    def __enter__(self) -> Network:
        remove_stale_runs()
        RECORDS.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self._record = {"pid": pid, "start": _start_time(pid)}
        self._save_record()
        try:
            self.subnet = choose_subnet()
            hosts = [str(a) for a in self.subnet.hosts()][1:]  # .1 is the bridge
            self._pools = {"pod": hosts[: len(hosts) * 3 // 4], "service": hosts[len(hosts) * 3 // 4 :][::-1]}
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{self.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for netns in list(self.namespaces.values()):
            self.remove(netns)
        remove_run(self.run_id)  # the bridge, the record, and anything a crash in between left

    def set_workdir(self, path: Path) -> None:
        with self._lock:
            self._record["workdir"] = str(path)
            self._save_record()

    def _save_record(self) -> None:
        path = _record_path(self.run_id)
        path.with_suffix(".tmp").write_text(json.dumps(self._record))
        path.with_suffix(".tmp").replace(path)

    def allocate(self, kind: str = "pod") -> str:
        """A free address: pods take them from the bottom of the range, cluster IPs from the top.

        A released address goes to the back of its pool: reused last, so that no neighbour's ARP
        cache still points it at a veth that is gone.
        """
        with self._lock:
            pool = self._pools[kind]
            if not pool:
                raise NetworkError(f"no {kind} address left in {self.subnet}")
            return pool.pop(0)

    def release(self, address: str, kind: str = "pod") -> None:
        with self._lock:
            if address not in self._pools[kind]:
                self._pools[kind].append(address)

    def add(self, label: str) -> Netns:
        """A new namespace with its own address on the bridge."""
        address = self.allocate("pod")
        with self._lock:
            self._count += 1
            number = self._count
        safe = re.sub(r"[^a-z0-9.-]", "-", label.lower())[:80]
        netns = Netns(f"{PREFIX}-{self.run_id}-{number}-{safe}", address, f"{self.bridge}v{number:x}")
        self.namespaces[netns.name] = netns
        peer = f"{self.bridge}p{number:x}"
        try:
            ip("netns", "add", netns.name)
            ip("link", "add", netns.host_veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", netns.host_veth, "master", self.bridge)
            ip("link", "set", netns.host_veth, "up")
            ip("link", "set", peer, "netns", netns.name)
            ip("-n", netns.name, "link", "set", peer, "name", "eth0")
            ip("-n", netns.name, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
            ip("-n", netns.name, "link", "set", "eth0", "up")
            ip("-n", netns.name, "link", "set", "lo", "up")
            netns.etc.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.remove(netns)
            raise
        return netns

    def add_address(self, netns: Netns, address: str) -> None:
        """One more address on the namespace's eth0 (a Service's cluster IP)."""
        ip("-n", netns.name, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")

    def remove_address(self, netns: Netns, address: str) -> None:
        ip("-n", netns.name, "addr", "del", f"{address}/{self.prefixlen}", "dev", "eth0", check=False)

    def remove(self, netns: Netns) -> None:
        """Kill what still runs in the namespace, then remove it, its veth and its /etc folder."""
        _kill_namespace_processes(netns.name)
        ip("netns", "del", netns.name, check=False)
        ip("link", "del", netns.host_veth, check=False)  # gVisor keeps the host end otherwise
        shutil.rmtree(netns.etc, ignore_errors=True)
        if self.namespaces.pop(netns.name, None) is not None:
            self.release(netns.address, "pod")

    def names(self) -> list[str]:
        """Namespaces of this run that exist on the machine now (for leak checks)."""
        listed = [n.split(" ")[0] for n in ip("netns", "list", check=False).splitlines()]
        return [n for n in listed if n.startswith(f"{PREFIX}-{self.run_id}-")]
