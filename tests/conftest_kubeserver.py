"""
The ``kube`` fixture: a fresh in-process Kubernetes API server per test.

pytest loads only ``conftest.py`` files by itself; a test module uses this one with
``pytest_plugins = ['tests.conftest_kubeserver']``.
"""

from collections.abc import Iterator

import pytest

from testbed.kubeserver import KubeServer


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server
