"""Fixtures of the image tests: the engine, and the images `make test` built (scripts/images.sh)."""

from __future__ import annotations

import os

import pytest

from testbed.containers.engine import OPERATOR_IMAGE, WORKLOAD_IMAGE, Docker


@pytest.fixture(scope="session")
def docker() -> Docker:
    """The engine; a skip with the reason where there is none, a failure where CI requires one."""
    engine = Docker()
    reason = engine.unavailable()
    if reason:
        if os.environ.get("KUBEFLOWER_REQUIRE_IMAGES") == "1":
            pytest.fail(f"KUBEFLOWER_REQUIRE_IMAGES=1 and {reason}")
        pytest.skip(reason)
    return engine


def _built(docker: Docker, tag: str) -> str:
    if not docker.has_image(tag):
        pytest.fail(f"{tag} is not in the engine: `make test` builds it (scripts/images.sh), or run `make images`")
    return tag


@pytest.fixture(scope="session")
def operator_image(docker: Docker) -> str:
    return _built(docker, OPERATOR_IMAGE)


@pytest.fixture(scope="session")
def workload_image(docker: Docker) -> str:
    return _built(docker, WORKLOAD_IMAGE)
