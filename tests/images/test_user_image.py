"""A user's own image, built FROM the workload image with a Flower App added (examples/flower-app,
what `spec.app` users do), runs as a federation of containers the same way as the built-in app."""

from __future__ import annotations

import pytest

from testbed.containers.engine import REPO, Docker
from testbed.containers.federation import Federation, one, render
from testbed.containers.pods import LABEL, PodNetwork

pytestmark = pytest.mark.images
EXAMPLE = REPO / "examples" / "flower-app"


def test_an_image_built_from_the_workload_image_runs_its_own_flower_app(docker: Docker, workload_image: str) -> None:
    objects = render(EXAMPLE / "job.yaml")
    image = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    docker(
        "build",
        "--quiet",
        "--network",
        "none",
        "--label",
        LABEL,
        "--build-arg",
        f"WORKLOAD_IMAGE={workload_image}",
        "-t",
        image,
        str(EXAMPLE),
    )
    with PodNetwork(docker) as network:
        federation = Federation.start(network, objects)
        status = federation.wait_finished(420)
        assert status["phase"] == "Succeeded", f"{status}\n{federation.logs()}"
        assert status["currentRound"] == status["totalRounds"] == 3
        # The app's own metrics, under its own names, aggregated by Flower's FedAvg.
        assert status["metrics"]["eval_acc"] >= 0.8, status
        assert sorted(status["serverMetrics"]) == ["accuracy", "loss"], status  # its centralized evaluation
        # Its torch.save("final_model.pt") into its working directory, with the root read-only.
        assert "the app saved final_model.pt in /var/lib/kubeflower/output/app" in network.logs(federation.server)
        print(f"\nown app in containers: 3/3 rounds, eval_acc {status['metrics']['eval_acc']:.4f}")
