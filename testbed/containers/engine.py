"""The Docker engine as the image tests use it: the docker.io package's client, the images'
names, and each image's metadata (ENTRYPOINT, CMD, ENV, USER) read from the engine."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.podrunner.images import Image

REPO = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
REGISTRY = os.environ.get("REGISTRY", "ghcr.io/kubeflower")
OPERATOR_IMAGE = f"{REGISTRY}/operator:{VERSION}"
WORKLOAD_IMAGE = f"{REGISTRY}/workload:{VERSION}"


class DockerError(Exception):
    pass


@dataclass(frozen=True)
class Docker:
    """`docker` commands against the engine that DOCKER_HOST names."""

    binary: str = DOCKER

    def __call__(self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> str:
        done = subprocess.run(
            [self.binary, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        if check and done.returncode != 0:
            raise DockerError(
                f"docker {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        return done.stdout

    def unavailable(self) -> str | None:
        """Why no engine can be used here, or None."""
        if reason := os.environ.get("KUBEFLOWER_NO_ENGINE"):
            return reason
        if not os.path.exists(self.binary):
            return f"{self.binary} not found (Debian's docker.io; `make test` installs it as root)"
        try:
            self("version", timeout=20)
        except (DockerError, subprocess.TimeoutExpired) as e:
            return f"no Docker engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')}: {e}"
        return None

    def logs(self, container: str) -> str:
        """The container's output, standard output and error interleaved."""
        done = subprocess.run(
            [self.binary, "logs", container],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        return done.stdout

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self(kind, "inspect", name))[0]

    def has_image(self, tag: str) -> bool:
        return subprocess.run([self.binary, "image", "inspect", tag], check=False, capture_output=True).returncode == 0

    def image_metadata(self, tag: str) -> Image:
        """What a kubelet reads from an image: its ENTRYPOINT, CMD, ENV, USER and WORKDIR."""
        config = self.inspect("image", tag)["Config"]
        user, _, group = (config.get("User") or "0").partition(":")
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        return Image(
            entrypoint=config.get("Entrypoint") or [],
            cmd=config.get("Cmd") or [],
            env=env,
            user=int(user),
            group=int(group or user),
            workdir=config.get("WorkingDir") or "/",
        )
