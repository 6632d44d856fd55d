"""TLS, SuperNode authentication and the front proxy with real Flower processes on loopback.

The server entry point runs as `kubeflower run` starts it (its environment from the builders,
throwaway keys), and the test plays the clients: SuperNodes with the job's own key, with a key
nobody registered, with another job's key, in plain HTTP; and a probe of the Flower port for
Flower's Control and Runtime APIs, its docs, and path tricks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeflower.core import contract, keys
from kubeflower.core.validation import load_job
from kubeflower.local import local_commands, write_keys
from kubeflower_workload import processes
from kubeflower_workload.control import Control, ControlError
from testbed import fleetprobe
from tests.workload.conftest import MARKER, REPO, write_job

pytestmark = pytest.mark.slow
REFUSED_WITHIN = 60.0
"""Seconds for a refused SuperNode to give up (it retries with backoff: about 15 s here)."""


def _wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.5)
    return value


@pytest.fixture
def secured_server(tmp_path: Path, marker: str) -> Iterator[tuple[dict[str, str], Control, Path]]:
    """Job A's server entry point, running: (its environment, a Control client on loopback, the
    clients' keys folder)."""
    job = load_job(REPO / "examples" / "digits-fedavg.yaml")
    (name, command, env), (_, _, client_env), *_ = local_commands(job, REPO / "examples", tmp_path / "out", tmp_path)
    assert name == "server"
    server = processes.start(command, processes.child_env(env | {MARKER: marker}), tmp_path / "server.log")
    control = Control(
        f"127.0.0.1:{env[contract.ENV_SUPERLINK_LOOPBACK_PORT]}",
        ca_cert=Path(env[contract.ENV_TLS_DIR]) / keys.CA_CERT,
    )
    try:
        _wait(lambda: "registered 2 SuperNode public key" in (tmp_path / "server.log").read_text(), 60, "keys")
        yield env, control, Path(client_env[contract.ENV_CLIENT_KEYS_DIR])
    finally:
        processes.stop(server, 10)


def _supernode(env: dict[str, str], marker: str, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    command = [
        "flower-supernode",
        *flags,
        "--superlink",
        f"127.0.0.1:{env[contract.ENV_SUPERLINK_PORT]}",
        "--port",
        str(processes.free_ports(1)[0]),
        "--max-retries",
        "3",
    ]
    return processes.start(command, processes.child_env({MARKER: marker, "FLWR_HOME": str(log.parent)}), log)


def test_only_registered_keys_of_this_job_join_and_plaintext_is_refused(
    secured_server: tuple[dict[str, str], Control, Path], tmp_path: Path, marker: str
) -> None:
    env, control, client_keys = secured_server
    ca = str(client_keys / keys.CA_CERT)
    other_job = write_keys(load_job(write_job(tmp_path, "other-job")), tmp_path / "other")["clients"]
    stranger = tmp_path / "stranger.key"
    stranger.write_bytes(keys.client_key().private_openssh)
    refused = {
        "unregistered": _supernode(
            env,
            marker,
            tmp_path / "a" / "log",
            "--root-certificates",
            ca,
            "--auth-supernode-private-key",
            str(stranger),
        ),
        "other job": _supernode(
            env,
            marker,
            tmp_path / "b" / "log",
            "--root-certificates",
            ca,
            "--auth-supernode-private-key",
            str(other_job / keys.client_private_key_file(0)),
        ),
        "plaintext": _supernode(env, marker, tmp_path / "c" / "log", "--insecure"),
    }
    member = _supernode(
        env,
        marker,
        tmp_path / "d" / "log",
        "--root-certificates",
        ca,
        "--auth-supernode-private-key",
        str(client_keys / keys.client_private_key_file(0)),
    )
    try:
        _wait(lambda: control.online_nodes() == 1, 60, "the job's own client online")
        for what, node in refused.items():
            node.wait(timeout=REFUSED_WITHIN)
            assert node.returncode != 0, what
        assert control.online_nodes() == 1, "none of the refused nodes joined"
        assert member.poll() is None
    finally:
        for node in [member, *refused.values()]:
            processes.stop(node, 5)


def test_the_flower_port_serves_the_fleet_api_only(
    secured_server: tuple[dict[str, str], Control, Path], tmp_path: Path
) -> None:
    env, control, client_keys = secured_server
    answers = fleetprobe.probe(
        "127.0.0.1", int(env[contract.ENV_SUPERLINK_PORT]), "localhost", str(client_keys / keys.CA_CERT)
    )
    assert answers[fleetprobe.FLEET] == 401, "the Fleet API reaches the SuperLink (which wants a signature)"
    assert {path: answers[path] for path in fleetprobe.REFUSED} == dict.fromkeys(fleetprobe.REFUSED, 404)
    assert answers[fleetprobe.PLAIN] == 400, "plain HTTP to the TLS port"
    # Behind the proxy, on loopback, the same Control API answers: the proxy is what refused it.
    assert control.online_nodes() == 0
    with pytest.raises(ControlError):
        Control(f"127.0.0.1:{env[contract.ENV_SUPERLINK_PORT]}", ca_cert=client_keys / keys.CA_CERT).online_nodes()


def test_a_resnet18_round_passes_the_front_proxy(tmp_path: Path, kubeflower_run: Any, run_env: dict[str, str]) -> None:
    """ResNet-18's 11 M parameters (about 45 MB a message) move as Flower's 5 MiB chunks, each one
    request through nginx, with TLS and SuperNode authentication on."""
    from tests.workload.test_datasets import write_cifar10

    write_cifar10(Path(run_env["KUBEFLOWER_DATA_DIR"]), per_batch=4)
    job = write_job(
        tmp_path,
        "resnet",
        rounds=1,
        task={"dataset": "cifar10", "model": "resnet18", "batchSize": 8},
    )
    result = kubeflower_run(job, tmp_path / "out", timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    server_log = (tmp_path / "out" / "logs" / "server.log").read_text()
    assert "TLS and SuperNode authentication" in server_log
    model = tmp_path / "out" / "final_model.pt"
    assert model.stat().st_size > 40_000_000, "the model is ResNet-18's"
    # The keys were throwaway: named in the clients' command lines, gone after the run, never in the output.
    client_log = (tmp_path / "out" / "logs" / "client-0.log").read_text()
    (folder,) = set(re.findall(r"--root-certificates (\S+)/ca\.crt", client_log))
    assert not Path(folder).exists()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix != ".pt":
            assert "PRIVATE KEY" not in path.read_text(errors="replace"), path


def test_a_key_added_during_the_run_is_registered_and_its_node_joins(
    secured_server: tuple[dict[str, str], Control, Path], tmp_path: Path, marker: str
) -> None:
    """A scale-up: the operator adds a client's keys to the job's Secrets, the kubelet brings the
    public key into the server's mounted folder, and the server registers it while the run goes on.
    A key's name that no longer leads to a file (a kubelet's link to a removed key, between its
    `..data` swap and the link's removal) is passed over: listed first, it would stop the rest."""
    env, control, client_keys = secured_server
    pair = keys.client_key()
    new_key = tmp_path / "client-2.key"
    new_key.write_bytes(pair.private_openssh)
    tls = Path(env[contract.ENV_TLS_DIR])
    (tls / keys.client_public_key_file(10)).symlink_to(f"..data/{keys.client_public_key_file(10)}")
    (tls / keys.client_public_key_file(2)).write_bytes(pair.public_pem)
    _wait(lambda: "(3 in all)" in (tmp_path / "server.log").read_text(), 60, "the new key registered")
    ca = str(client_keys / keys.CA_CERT)
    node = _supernode(
        env, marker, tmp_path / "e" / "log", "--root-certificates", ca, "--auth-supernode-private-key", str(new_key)
    )
    try:
        _wait(lambda: control.online_nodes() == 1, 60, "the new client online")
    finally:
        processes.stop(node, 5)


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything below it at once, as a container's end does."""
    for pid in [process.pid, *processes.descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _bound(listener: socket.socket, port: int) -> bool:
    try:
        listener.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _close_connections_abruptly(port: int, seconds: float) -> int:
    """Take connections on the Flower port and close them at once, as a Service's proxy or a load
    balancer whose backend is gone does; how many."""
    count = 0
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The killed proxy's socket lasts until its last process is gone (a while on a busy machine).
        _wait(lambda: _bound(listener, port), 30, f"port {port} free")
        listener.listen(16)
        listener.settimeout(0.5)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                listener.accept()[0].close()
                count += 1
    return count


def _online(control: Control) -> int:
    """The SuperLink's online nodes; 0 while it does not answer."""
    try:
        return control.online_nodes()
    except ControlError:
        return 0


def test_a_client_joins_its_restarted_server(tmp_path: Path, marker: str) -> None:
    """A server pod that restarts brings a new SuperLink, which knows the job's keys under new node
    ids; between the two, the Flower port's connections are closed abruptly. The client entry point
    (its SuperNode joined the old SuperLink) joins the new one by itself, without a restart."""
    job = load_job(REPO / "examples" / "digits-fedavg.yaml")
    (_, server_command, env), (_, client_command, client_env), *_ = local_commands(
        job, REPO / "examples", tmp_path / "out", tmp_path
    )
    control = Control(
        f"127.0.0.1:{env[contract.ENV_SUPERLINK_LOOPBACK_PORT]}",
        ca_cert=Path(env[contract.ENV_TLS_DIR]) / keys.CA_CERT,
    )
    server_log, client_log = tmp_path / "server.log", tmp_path / "client.log"

    def start_server() -> subprocess.Popen[bytes]:
        return processes.start(server_command, processes.child_env(env | {MARKER: marker}), server_log)

    server = start_server()
    client = processes.start(client_command, processes.child_env(client_env | {MARKER: marker}), client_log)
    try:
        _wait(lambda: _online(control) == 1, 90, "the client online")
        _kill_tree(server)
        closed = _close_connections_abruptly(int(env[contract.ENV_SUPERLINK_PORT]), 15)
        assert closed > 0, "the SuperNode tried the Flower port while the server was away"
        server = start_server()
        _wait(lambda: server_log.read_text().count("registered 2 SuperNode public key") == 2, 60, "keys again")
        _wait(lambda: _online(control) == 1, 90, "the client online at the new SuperLink")
        assert client.poll() is None, "the client entry point did not end: it started a new SuperNode"
        assert "lost its place at the SuperLink" in client_log.read_text()
    finally:
        processes.stop(client, 15)
        processes.stop(server, 10)
