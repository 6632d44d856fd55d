"""Device selection of the built-in app, on a machine without a GPU: the decision, the one move of
model and data, and that nothing asks CUDA before the process that trains does."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kubeflower_workload import device, models, task, training
from tests.workload.conftest import REPO


def test_the_cpu_when_this_process_sees_no_gpu() -> None:
    assert not torch.cuda.is_available(), "this test describes a machine without a GPU"
    assert device.select() == torch.device("cpu")


def test_the_first_gpu_when_this_process_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.select() == torch.device("cuda", 0)


def test_model_and_every_tensor_of_the_data_move_once() -> None:
    model = models.build("digits-cnn")
    data = task.LocalData(
        torch.zeros(4, 1, 8, 8),
        torch.zeros(4, dtype=torch.long),
        torch.ones(2, 1, 8, 8),
        torch.ones(2, dtype=torch.long),
    )
    # The meta device stands in for a GPU: a real move to a device other than the CPU.
    moved_model, moved = device.place(model, data, torch.device("meta"))
    assert {p.device.type for p in moved_model.parameters()} == {"meta"}
    assert {t.device.type for t in (moved.x_train, moved.y_train, moved.x_test, moved.y_test)} == {"meta"}
    # On the CPU (every pod without a GPU) the same tensors go on, not copies.
    _, same = device.place(models.build("digits-cnn"), data, torch.device("cpu"))
    assert same.x_train is data.x_train and same.y_test is data.y_test
    with pytest.raises(TypeError, match="dataclass"):
        device.place(model, (data.x_train,), torch.device("cpu"))


def test_training_on_the_cpu_is_unchanged_by_the_device_code() -> None:
    """The mean training loss is the float64 mean of each step's loss, as before the device code."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    model = models.build("digits-cnn")
    reference = models.build("digits-cnn")
    reference.load_state_dict(model.state_dict())
    loss = training.train(model, x, y, epochs=2, batch_size=16, learning_rate=0.05, seed=3)
    # The same loop, by hand, summing Python floats.
    generator, losses = torch.Generator().manual_seed(3), []
    params = list(reference.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(2):
        order = torch.randperm(40, generator=generator)
        for start in range(0, 40, 16):
            batch = order[start : start + 16]
            step = torch.nn.functional.cross_entropy(reference(x[batch]), y[batch])
            reference.zero_grad(set_to_none=True)
            step.backward()
            with torch.no_grad():
                for v, p in zip(velocity, params, strict=True):
                    v.mul_(training.MOMENTUM).add_(p.grad)
                    p.sub_(0.05 * v)
            losses.append(step.item())
    assert loss == sum(losses) / len(losses)
    pairs = zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_importing_the_app_asks_cuda_nothing() -> None:
    """A process that forks after CUDA was initialised hands its children a context they cannot use:
    importing the ClientApp (as a Flower process does before a message) must not touch CUDA."""
    probe = (
        "import torch, sys\n"
        "def boom(*a, **k): raise SystemExit('CUDA was asked at import time')\n"
        "torch.cuda.is_available = boom\n"
        "torch.cuda.init = boom\n"
        "torch.cuda.device_count = boom\n"
        f"sys.path.insert(0, {str(REPO / 'workload' / 'kubeflower_workload' / 'flowerapp')!r})\n"
        "import kubeflower_app.client_app, kubeflower_app.server_app, kubeflower_workload.task\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd="/", check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
