"""The images' lock files (requirements/, `make lock`) agree with pyproject.toml: every pin there
is the version the lock installs, every dependency is locked, and hashes are there where pip can
check them. The image builds then install exactly what the tests of the code ran against."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCKS = REPO / "requirements"


def locked(name: str) -> dict[str, str]:
    """{package: version} of a lock file (local version labels such as +cpu dropped)."""
    text = (LOCKS / name).read_text()
    return {
        m[0].lower().replace("_", "-"): m[1].split("+")[0] for m in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)
    }


def requirements(extra: str | None) -> list[tuple[str, str | None]]:
    """(name, pinned version or None) of the core's or an extra's requirements."""
    found = []
    for spec in PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]:
        m = re.match(r"([A-Za-z0-9_.-]+)(?:==([^,;\s]+))?", spec)
        assert m, spec
        found.append((m[1].lower(), m[2]))
    return found


@pytest.mark.parametrize(
    ("extra", "locks"),
    [
        ("operator", ["operator.txt"]),
        ("workload", ["workload.txt", "torch-cuda.txt"]),
        ("workload", ["workload.txt", "torch-cpu.txt"]),
    ],
)
def test_every_dependency_is_locked_at_its_pinned_version(extra: str, locks: list[str]) -> None:
    versions = {k: v for lock in locks for k, v in locked(lock).items()}
    for name, pin in [*requirements(None), *requirements(extra)]:
        assert name in versions, f"{name} is missing from {locks}: run `make lock`"
        if pin:
            assert versions[name] == pin, (
                f"{name}: pyproject pins {pin}, {locks} lock {versions[name]}: run `make lock`"
            )


def test_locks_from_pypi_carry_hashes() -> None:
    for lock in ("operator.txt", "workload.txt", "torch-cuda.txt"):
        text = (LOCKS / lock).read_text()
        pins = re.findall(r"^[A-Za-z0-9_.-]+==\S+", text, re.M)
        assert pins and len(re.findall(r"^[A-Za-z0-9_.-]+==\S+ \\\n\s+--hash=sha256:", text, re.M)) == len(pins), lock


def test_the_cpu_and_cuda_torch_locks_are_the_same_release() -> None:
    cpu, cuda = locked("torch-cpu.txt"), locked("torch-cuda.txt")
    assert {k: cpu[k] for k in ("torch", "torchvision")} == {k: cuda[k] for k in ("torch", "torchvision")}
