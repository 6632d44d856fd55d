"""`scripts/images.sh`'s choice of tags, with a recording stand-in for the `docker` client (the
real builds are tests/images' business): `TORCH=cuda`, asked for, is a variant with its own tag;
the default keeps the plain tag that the tests, deploy/ and the operator's default image name."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1 $2" in
  "image inspect") [ "$3" = -f ] && echo 1000000 ;;
esac
exit 0
"""


def built_tags(tmp_path: Path, torch: str | None) -> list[str]:
    """The tags that `docker build` was asked for, in a copy of the script's inputs."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts/images.sh", work / "scripts/images.sh")
    for name in ("pyproject.toml", "Dockerfile.operator", "Dockerfile.workload"):
        shutil.copy(REPO / name, work / name)
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH", "REGISTRY", "BASE_IMAGE")}
    env.update(DOCKER=str(docker), DOCKER_LOG=str(log), SAVE="0", BASE_IMAGE="base:1", PIP_CERT="/nonexistent")
    if torch:
        env["TORCH"] = torch
    subprocess.run(
        ["bash", str(work / "scripts/images.sh")], cwd=work, env=env, check=True, capture_output=True, timeout=60
    )
    tags = []
    for line in log.read_text().splitlines():
        words = line.split()
        if words[0] == "build":
            tags.append(words[words.index("-t") + 1])
    return tags


@pytest.mark.parametrize(
    ("torch", "workload"),
    [
        ("cuda", f"ghcr.io/kubeflower/workload:{VERSION}-cuda"),
        ("cpu", f"ghcr.io/kubeflower/workload:{VERSION}"),
        (None, f"ghcr.io/kubeflower/workload:{VERSION}"),  # cpu or, where the CPU index does not answer, cuda
    ],
)
def test_a_cuda_image_asked_for_gets_its_own_tag(tmp_path: Path, torch: str | None, workload: str) -> None:
    assert built_tags(tmp_path, torch) == [f"ghcr.io/kubeflower/operator:{VERSION}", workload]
