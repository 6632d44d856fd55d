"""The examples as a user meets them: every one valid, and `kubeflower render` of the GPU example
giving client pods that a GPU node admits and that spread over nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeflower.core.validation import parse_job

REPO = Path(__file__).resolve().parents[1]
KUBEFLOWER = str(Path(sys.executable).parent / "kubeflower")


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_a_valid_job(path: Path) -> None:
    parse_job(yaml.safe_load(path.read_text()))


def test_the_gpu_example_renders_client_pods_that_ask_for_a_gpu_and_tolerate_gpu_nodes() -> None:
    done = subprocess.run(
        [KUBEFLOWER, "render", str(REPO / "examples/cifar10-resnet18-gpu.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    objects = {o["kind"]: o for o in yaml.safe_load_all(done.stdout)}
    clients = objects["StatefulSet"]["spec"]["template"]["spec"]
    (container,) = clients["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in clients["tolerations"]
    assert clients["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    server = objects["Deployment"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(server), "the server aggregates on its CPU"
