"""Issue 11's two promises about a running federation, with real Flower processes on loopback:
a server the operator tells to stop (a Failed job) closes its SuperLink and Fleet port but keeps
serving its final status; a client added by a scale up mid-run trains (a partition, its replies in a
following round). Each starts only the processes its claim needs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from kubeflower.core import contract
from kubeflower.core.server_status import Phase, ServerStatus
from kubeflower.core.validation import load_job
from kubeflower.local import local_commands
from kubeflower_operator import poll as polling
from kubeflower_workload import processes
from tests.workload.conftest import MARKER, write_job

pytestmark = pytest.mark.slow
TOKEN = "the-jobs-uid"


def _status(base: str) -> ServerStatus | None:
    try:
        with urllib.request.urlopen(f"{base}/status", timeout=5) as response:
            return ServerStatus.model_validate_json(response.read())
    except OSError:
        return None


def _wait_status(base: str, done: Callable[[ServerStatus], bool], what: str, timeout: float = 180) -> ServerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(base)
        if status is not None and done(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout}s; last status: {_status(base)}")


def _superlinks(root: int) -> list[int]:
    found = []
    for pid in processes.descendants(root):
        try:
            if b"flower-superlink" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _start(name: str, command: list[str], env: dict[str, str], marker: str, logs: Path) -> subprocess.Popen[bytes]:
    return processes.start(command, processes.child_env(env | {MARKER: marker}), logs / f"{name}.log")


def test_a_stopped_server_closes_its_superlink_and_fleet_port_and_keeps_serving_its_status(
    tmp_path: Path, marker: str
) -> None:
    """`POST /stop` (what the operator sends when it fails a job): the run ends Failed, the SuperLink
    process is gone and its Fleet port refuses connections, /status still serves the final document.
    The server alone: its run waits for clients that never come, as a wedged job's would."""
    job = load_job(write_job(tmp_path, "stopped"))
    (name, command, env), *_ = local_commands(job, tmp_path, tmp_path / "out", tmp_path / "home")
    fleet = int(env[contract.ENV_SUPERLINK_PORT])
    base = f"http://127.0.0.1:{env[contract.ENV_STATUS_PORT]}"
    server = _start(name, command, env | {contract.ENV_STOP_TOKEN: TOKEN}, marker, tmp_path)
    try:
        _wait_status(base, lambda s: s.run_id is not None, "submitted run")
        (superlink,) = _superlinks(server.pid)
        socket.create_connection(("127.0.0.1", fleet), timeout=5).close()  # open while the run waits

        assert polling.stop(f"{base}/stop", "not-the-token", 5) == 403
        still = _status(base)
        assert still is not None and not still.phase.finished, still
        assert polling.stop(f"{base}/stop", TOKEN, 5) == 202

        final = _wait_status(base, lambda s: s.phase == Phase.FAILED, "Failed phase")
        assert "stopped by the operator" in final.message
        deadline = time.monotonic() + 30
        while Path(f"/proc/{superlink}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{superlink}").exists(), "the SuperLink still runs"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", fleet), timeout=5)
        assert server.poll() is None, "the server process must keep serving until the TTL"
        assert _status(base) == final
        assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == json.loads(final.to_json())
    finally:
        processes.stop(server, grace=15)
    assert server.returncode == 0


def test_a_client_added_by_a_scale_up_mid_run_trains_in_a_following_round(tmp_path: Path, marker: str) -> None:
    """Two clients start the run; after round 1 a third pod of the same template (the StatefulSet's
    ordinal 2, KUBEFLOWER_NUM_PARTITIONS still 2) joins: it takes partition 2 mod 2 = 0, and a
    later round counts its replies (3 instead of 2)."""
    job = load_job(write_job(tmp_path, "scaled", rounds=6))
    members = local_commands(job, tmp_path, tmp_path / "out", tmp_path / "home")
    (_, _, server_env), _, (_, client_command, client_env) = members
    base = f"http://127.0.0.1:{server_env[contract.ENV_STATUS_PORT]}"
    started = [_start(name, command, env, marker, tmp_path) for name, command, env in members]
    try:
        first = _wait_status(base, lambda s: s.current_round >= 1, "first round")
        assert first.phase == Phase.RUNNING, first.message
        assert [r.replies for r in first.history] == [2] * len(first.history)

        (port,) = processes.free_ports(1)
        pod = f"{client_env[contract.ENV_POD_NAME].rsplit('-', 1)[0]}-2"
        home = tmp_path / "home" / "client-2"
        added = client_env | {
            contract.ENV_POD_NAME: pod,
            contract.ENV_SUPERNODE_PORT: str(port),
            contract.ENV_WORK_DIR: str(home / "app"),
            "FLWR_HOME": str(home),
        }
        assert added[contract.ENV_NUM_PARTITIONS] == "2"  # the template is unchanged by a scale
        started.append(_start("client-2", client_command, added, marker, tmp_path))
        joined_after = first.current_round

        final = _wait_status(base, lambda s: s.phase.finished, "end of the run", timeout=400)
        assert final.phase == Phase.SUCCEEDED, final.message
        later = [r.replies for r in final.history if r.round > joined_after]
        assert 3 in later, f"the added client never replied: replies per round {[r.replies for r in final.history]}"
        log = (tmp_path / "client-2.log").read_text()
        assert "client 2 was added by a scale up: it trains on partition 0" in log
        assert "partition-id=0 num-partitions=2" in log
    finally:
        for process in started:
            processes.stop(process, grace=15)
