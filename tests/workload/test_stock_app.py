"""bench/stock_app, the baseline of bench/round_overhead.py, computes what the built-in app computes.

The benchmark compares the two apps' accuracy on the same seed: that comparison means something
only while the stock-style app sees the same data and takes the same optimiser steps.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from kubeflower.core.runconfig import run_config
from kubeflower.core.validation import load_job
from kubeflower_workload import models, task, training
from kubeflower_workload.appconfig import TaskConfig
from tests.workload.conftest import REPO

STOCK_APP = REPO / "bench" / "stock_app"
DEMO_CONFIG = run_config(load_job(REPO / "examples" / "digits-fedavg.yaml").spec)


@pytest.fixture(scope="module")
def stock_task() -> Iterator[ModuleType]:
    sys.path.insert(0, str(STOCK_APP))
    try:
        from stock_app import task as stock

        yield stock
    finally:
        sys.path.remove(str(STOCK_APP))


def test_the_stock_app_declares_a_subset_of_the_built_in_apps_defaults() -> None:
    def defaults(project: str) -> dict[str, object]:
        return tomllib.loads((REPO / project / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

    stock, built_in = defaults("bench/stock_app"), defaults("workload/kubeflower_workload/flowerapp")
    assert stock.items() <= built_in.items()


def test_same_data_and_same_training_steps(stock_task: ModuleType, tmp_path: Path) -> None:
    config = TaskConfig.from_run_config(DEMO_CONFIG)
    for partition_id in (0, 1):
        ours = task.local_data(config, partition_id, 2, tmp_path)
        theirs = stock_task.load_data(partition_id, 2, DEMO_CONFIG)
        for a, b in zip((ours.x_train, ours.y_train, ours.x_test, ours.y_test), theirs, strict=True):
            assert torch.equal(a, b)
    torch.manual_seed(config.seed)
    ours_model = models.build(config.model)
    theirs_model = stock_task.Net()
    theirs_model.load_state_dict(ours_model.state_dict())
    data = task.local_data(config, 0, 2, tmp_path)
    options = {"epochs": 2, "batch_size": config.batch_size, "learning_rate": config.learning_rate, "seed": 7}
    ours_loss = training.train(ours_model, data.x_train, data.y_train, **options)
    theirs_loss = stock_task.train(
        theirs_model, data.x_train, data.y_train, 2, config.batch_size, config.learning_rate, 7
    )
    assert ours_loss == pytest.approx(theirs_loss, rel=1e-4)
    for name, value in ours_model.state_dict().items():
        torch.testing.assert_close(value, theirs_model.state_dict()[name], rtol=1e-4, atol=1e-5)
