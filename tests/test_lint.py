"""`make lint` catches what it is there for: the checks, run on a copy of the project with one bad
file added, fail on it (and pass on the copy without it, so the failure is the bad file's).

The copy keeps the project's configuration (pyproject.toml) and the folders import-linter reads;
PYTHONPATH puts the copy's packages before the editable install, which points at this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ("pyproject.toml", "kubeflower", "operator", "workload", "testbed", "tests", "bench")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy(source, copy / name)
    return copy


def check(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(project / d) for d in ("operator", "workload", "."))}
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_import_contracts_fail_on_a_workload_module_importing_the_operator(project: Path) -> None:
    kept = check(project, "lint-imports", "--no-cache")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    (project / "workload" / "kubeflower_workload" / "sneaky.py").write_text(
        '"""Reaches into the operator."""\n\nfrom kubeflower_operator import builders\n\nBUILD = builders.labels\n'
    )
    broken = check(project, "lint-imports", "--no-cache")
    assert broken.returncode != 0
    assert "The operator and the workload never import each other BROKEN" in broken.stdout
    assert "kubeflower_workload.sneaky -> kubeflower_operator.builders" in broken.stdout


def test_import_contracts_fail_on_the_core_importing_the_cli(project: Path) -> None:
    (project / "kubeflower" / "core" / "sneaky.py").write_text('"""Not a leaf."""\n\nfrom kubeflower import cli\n')
    broken = check(project, "lint-imports", "--no-cache")
    assert broken.returncode != 0
    assert "The core is a leaf: it imports no other part BROKEN" in broken.stdout


def test_strict_type_check_fails_on_a_type_error(project: Path) -> None:
    module = project / "kubeflower" / "core" / "typo.py"
    module.write_text('"""Typed."""\n\n\ndef rounds() -> int:\n    return 3\n')
    clean = check(project, "mypy", "--no-incremental", str(module))
    assert clean.returncode == 0, clean.stdout
    module.write_text('"""Typed."""\n\n\ndef rounds() -> int:\n    return "3"\n')
    broken = check(project, "mypy", "--no-incremental", str(module))
    assert broken.returncode != 0
    assert 'typo.py:5: error: Incompatible return value type (got "str", expected "int")' in broken.stdout


def test_strict_type_check_fails_on_an_unannotated_function(project: Path) -> None:
    module = project / "kubeflower" / "core" / "untyped.py"
    module.write_text('"""Untyped."""\n\n\ndef rounds(job):\n    return job.rounds\n')
    broken = check(project, "mypy", "--no-incremental", str(module))
    assert broken.returncode != 0
    assert "[no-untyped-def]" in broken.stdout


def test_the_linter_and_the_formatter_fail_on_their_findings(project: Path) -> None:
    module = project / "kubeflower" / "core" / "messy.py"
    module.write_text('"""Messy."""\nimport os\n\n\ndef f( x:int )->int:\n    return x\n')
    assert check(project, "ruff", "check", "--no-cache", str(module)).returncode != 0
    assert check(project, "ruff", "format", "--check", "--no-cache", str(module)).returncode != 0
