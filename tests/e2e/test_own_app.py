"""End to end with a Flower App of one's own: examples/flower-app, in the image the pod runner
mirrors from its Dockerfile (testbed/podrunner/images.py), and the tests' own hostile app, run by
the operator's pods with a read-only root file system as the kubelet mounts it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from kubeflower.core.server_status import METRICS_LIMIT
from testbed.cluster import REPO, Cluster
from testbed.jobs import job
from testbed.podrunner import images
from tests.e2e.test_e2e import RUN
from tests.workload.ownapp import write_own_app

pytestmark = pytest.mark.e2e
EXAMPLE = REPO / "examples" / "flower-app" / "job.yaml"


def test_the_example_app_runs_with_its_metrics_its_log_and_its_saved_model(cluster: Cluster) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert images.find(document["spec"]["image"]) is images.FLOWER_APP_EXAMPLE
    document["spec"]["app"]["path"] = images.EXAMPLE_APP_PATH
    document["spec"]["rounds"] = 2  # the app's own default is 3: spec.rounds must reach it
    cluster.apply(document)
    name = document["metadata"]["name"]
    status = cluster.wait_status(name, lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end of the run")
    deployment = cluster.children(name)["Deployment"][0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    server_log = "\n".join(path.read_text() for path in cluster.runner.log_dir.glob(f"*{name}-server*"))
    assert status["phase"] == "Succeeded", f"{status}\n{server_log[-5000:]}"
    assert status["round"] == "2/2"
    # The app's own names; ACCURACY and loss as the job's metricNames pick them (eval_acc, eval_loss).
    metrics = status["metrics"]
    assert metrics["accuracy"] == metrics["eval_acc"] > 0.5 and metrics["loss"] == metrics["eval_loss"], metrics
    served = cluster.server_document(name)
    assert served is not None
    assert [sorted(r["trainMetrics"]) for r in served["history"]] == [["train_loss"]] * 2
    assert sorted(served["serverMetrics"]) == ["accuracy", "loss"]  # the centralized evaluation
    # The ServerApp's own log in the server's, and its model saved in its working directory.
    assert "[ROUND 2/2]" in server_log and "Saving final model to disk..." in server_log
    assert "the app saved final_model.pt in /var/lib/kubeflower/output/app" in server_log
    row = cluster.kubectl("get", "ftj", name).split("\n")[1].split()
    assert row[1:3] == ["Succeeded", "2/2"] and float(row[4]) == pytest.approx(metrics["accuracy"], abs=1e-4), row


def test_a_hostile_app_leaves_the_status_bounded_and_the_operator_unharmed(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests' own app (tests/workload/ownapp.py) in `hostile` mode, in an image of its own: forged
    progress lines, ten thousand metrics a round, a 3 MB line. Its ClientApps write into their working
    directory, with a read-only root."""
    write_own_app(tmp_path)
    image = "kubeflower-tests/ownapp:1"
    monkeypatch.setitem(
        images.IMAGES, image, dataclasses.replace(images.WORKLOAD, folders={"/srv/ownapp": str(tmp_path / "ownapp")})
    )
    document = job(
        "hostile", task=None, image=image, rounds=2, app={"path": "/srv/ownapp", "runConfig": {"mode": "hostile"}}
    )
    cluster.apply(document)
    status = cluster.wait_status(
        "hostile", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end of the run"
    )
    assert status["phase"] == "Succeeded" and status["round"] == "2/2", status
    assert len(status["metrics"]) <= METRICS_LIMIT + 2, status  # the evaluation's, and accuracy and loss
    served = cluster.server_document("hostile")
    assert served is not None and [r["round"] for r in served["history"]] == [1, 2]  # nothing forged
    assert all(len(r["trainMetrics"]) == METRICS_LIMIT for r in served["history"])
    assert len(json.dumps(served)) < 10_000
    # The operator goes on: another job is reconciled to its end.
    cluster.apply(job("after", task=None, image=image, rounds=1, app={"path": "/srv/ownapp"}))
    after = cluster.wait_status("after", lambda s: s.get("phase") in ("Succeeded", "Failed"), RUN, "the end of the run")
    assert after["phase"] == "Succeeded", after
