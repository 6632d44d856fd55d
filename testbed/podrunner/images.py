"""The images this node "has": what a container of each runs, in place of a pulled image.

An image here is the installation that runs the tests (the project's virtual environment, the
machine's root file system) with the metadata a real image carries: its ENTRYPOINT, CMD, ENV,
USER and WORKDIR. The entries mirror Dockerfile.workload and Dockerfile.operator, with the image's
/opt/kubeflower being this interpreter's prefix. A pod that names any other image stays waiting
with ErrImageNeverPull, as on a node that cannot pull.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import kubeflower
import kubeflower_operator
import kubeflower_workload

VENV = Path(sys.prefix)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: int = 0
    group: int = 0
    workdir: str = "/"
    users: dict[int, str] = field(default_factory=dict)
    """Users the image adds to /etc/passwd and /etc/group (`useradd --user-group`)."""
    folders: dict[str, str] = field(default_factory=dict)
    """Folders the image adds (path in the container -> this machine's folder, mounted read-only)."""


_PYTHON_ENV = {
    "PATH": f"{VENV / 'bin'}:{SYSTEM_PATH}",
    "LANG": "C.UTF-8",  # python:3.11-slim
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONSAFEPATH": "1",
}

WORKLOAD = Image(
    cmd=["kubeflower-server"],
    env={
        **_PYTHON_ENV,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_HOME": "/var/lib/kubeflower/flwr",
        "KUBEFLOWER_DATA_DIR": "/var/lib/kubeflower/data",
        "KUBEFLOWER_OUTPUT_DIR": "/var/lib/kubeflower/output",
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
    },
    user=10001,
    group=10001,
    users={10001: "kubeflower"},
)

OPERATOR = Image(
    entrypoint=[
        "kopf",
        "run",
        "--standalone",
        "--liveness=http://0.0.0.0:8080/healthz",
        "-m",
        "kubeflower_operator.handlers",
    ],
    cmd=["--all-namespaces"],
    env=dict(_PYTHON_ENV),
    user=10001,
    group=10001,
    users={10001: "kubeflower"},
)

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "flower-app"
EXAMPLE_APP_PATH = "/srv/flower-app"
FLOWER_APP_EXAMPLE = dataclasses.replace(WORKLOAD, folders={EXAMPLE_APP_PATH: str(EXAMPLE_APP)})
"""examples/flower-app/Dockerfile: the workload image with the app project added, read-only. At
EXAMPLE_APP_PATH, not the Dockerfile's /app: the pod runner cannot add a top-level directory."""

IMAGES: dict[str, Image] = {
    "ghcr.io/kubeflower/workload:0.1.0": WORKLOAD,
    "ghcr.io/kubeflower/operator:0.1.0": OPERATOR,
    "ghcr.io/kubeflower/flower-app-example:0.1.0": FLOWER_APP_EXAMPLE,
}


def account_files(image: Image) -> dict[str, str]:
    """/etc/passwd and /etc/group of a container: the machine's, with the image's users added."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    for uid, name in image.users.items():
        passwd += f"{name}:x:{uid}:{uid}::/home/{name}:/usr/sbin/nologin\n"
        group += f"{name}:x:{uid}:\n"
    return {"/etc/passwd": passwd, "/etc/group": group}


def installations() -> list[Path]:
    """The machine's directories that the images' commands run from, none under another.

    This Python's installations (the virtual environment and the interpreter it was made from) and
    the directories of the project's packages: an editable install (`make setup`) leaves those in
    the checkout (kubeflower/, operator/kubeflower_operator/ and workload/kubeflower_workload/, which
    holds the built-in Flower App).
    """
    packages = (kubeflower, kubeflower_operator, kubeflower_workload)
    # __path__, not __file__: imported from outside the checkout, they are namespace packages
    # (the editable install's finder), with no __file__ and a placeholder among their paths.
    sources = [p for m in packages for p in m.__path__ if os.path.isdir(p)]
    found = list(dict.fromkeys(Path(p).resolve() for p in (sys.base_prefix, sys.prefix, *sources)))
    return [path for path in found if not any(path != other and path.is_relative_to(other) for other in found)]


def exposures() -> list[dict[str, str | None]]:
    """What of the machine's file system a non-root container must be given to run this Python.

    Each of the `installations` (`keep`) and, where it lies under a directory that others may not
    enter (pyenv in /root, a checkout cloned into a `mktemp -d` directory), the topmost such
    directory (`hide`, mounted over with an empty tmpfs in the container, into which the kept
    directories are bound back: the rest of a checkout, .git or tests, stays out of sight), else
    None. The sandbox binds a kept directory back again where a pod's volume covers it.
    """
    found: list[dict[str, str | None]] = []
    for install in installations():
        closed = (a for a in reversed(install.parents) if not a.stat().st_mode & 0o001)
        found.append({"hide": next((str(a) for a in closed), None), "keep": str(install)})
    return found


def find(reference: str) -> Image | None:
    """The image a container names (`name:tag`; `name` alone means `:latest`)."""
    name = reference.split("@", 1)[0]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return IMAGES.get(name) or IMAGES.get(name.removeprefix("docker.io/"))
