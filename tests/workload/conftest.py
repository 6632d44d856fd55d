"""Fixtures of the workload tests: job files, `kubeflower run` as a subprocess, leftover processes.

Tests that start a real federation (SuperLink, SuperNodes, Flower App processes over loopback) are
marked `slow`; every process they start carries a per-test marker in its environment, so a test
can prove that none is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.jobs import job

REPO = Path(__file__).resolve().parents[2]
KUBEFLOWER = str(Path(sys.executable).parent / "kubeflower")
MARKER = "KUBEFLOWER_TEST_MARKER"


def write_job(folder: Path, name: str = "test-job", **spec: Any) -> Path:
    """A job file: the shared valid digits job with `spec` fields replaced."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job(name, **spec)))
    return path


def processes_with(marker: str) -> list[str]:
    """Live processes whose environment holds the marker (zombies have none): pid, parent, name
    (a forked ClientApp's is `flwr-clientapp`, its command line the fork server's), command."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                name = (entry / "comm").read_text().strip()
                found.append(f"{entry.name} (parent {parent}) [{name}]: {command}")
        except OSError:
            continue
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """A marker for the test's processes; the test fails if any outlives it."""
    value = uuid.uuid4().hex
    yield value
    # Flower's SuperExec watches its parent every 0.2 s and exits when it is gone: an orphan whose
    # parent the test has just killed gets a few seconds (a busy machine) to go by itself.
    deadline = time.monotonic() + 10
    while (left := processes_with(value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], "processes left behind"


@pytest.fixture
def run_env(marker: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `kubeflower run`: marked, with its own data folder and Flower settings."""
    return {
        **os.environ,
        MARKER: marker,
        "KUBEFLOWER_DATA_DIR": str(tmp_path / "data"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


@pytest.fixture
def kubeflower_run(run_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`kubeflower run JOB --output DIR` to its end."""

    def run(job_file: Path, output: Path, timeout: float = 240, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBEFLOWER, "run", str(job_file), "--output", str(output), *options],
            check=False,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
