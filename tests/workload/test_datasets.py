"""Data sets and models: torchvision formats written by the test, offline digits, shapes, FedProx."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kubeflower.core import contract
from kubeflower.core.vocabulary import (
    DATASETS,
    MODEL_INPUTS,
    NUM_CLASSES,
    DatasetName,
    ModelName,
    VocabularyError,
    resolve_model,
)
from kubeflower_workload import datasets, models, training

CLASSES = 10


def write_cifar10(root: Path, per_batch: int = 4) -> np.ndarray:
    """CIFAR-10's python format: pickled batches of (N, 3072) uint8 rows, channel-major."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, CLASSES, per_batch)]
        with open(folder / name, "wb") as out:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, out)
        if name != "test_batch":
            images.append(data)
    with open(folder / "batches.meta", "wb") as out:
        pickle.dump({"label_names": [f"class{i}" for i in range(CLASSES)], "num_vis": 3072}, out)
    return np.concatenate(images).reshape(-1, 3, 32, 32)


def write_mnist(root: Path, count: int = 6) -> np.ndarray:
    """MNIST's IDX files, as torchvision's MNIST reads them from MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = None
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, CLASSES, count).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
        train = train if train is not None else images
    return train


def test_cifar10_from_its_on_disk_format_then_from_the_cache(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    data = datasets.load("cifar10", tmp_path)
    assert data.x.shape == (20, 3, 32, 32) and data.x.dtype == np.uint8
    assert np.array_equal(data.x, written)
    assert data.features(np.arange(3)).shape == (3, 3, 32, 32)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    assert np.array_equal(datasets.load("cifar10", tmp_path).y, data.y)  # served from the .npz


def test_a_read_only_data_volume_is_read_in_place_and_prepared_into_the_pods_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec.data: a pre-loaded, read-only volume serves the data set with no download; what a client
    prepares from it goes to its own cache folder (KUBEFLOWER_CACHE_DIR), and is used from there."""
    volume, cache = tmp_path / "volume", tmp_path / "cache"
    written = write_cifar10(volume)
    real_mkstemp = datasets.tempfile.mkstemp

    def read_only_volume(*args: object, dir: Path, **kwargs: object) -> tuple[int, str]:
        if Path(dir).is_relative_to(volume):  # as a read-only mount answers (root ignores file modes)
            raise OSError(30, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)  # type: ignore[call-overload,no-any-return]

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pre-loaded data set must not be downloaded")

    monkeypatch.setattr(datasets.tempfile, "mkstemp", read_only_volume)
    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    monkeypatch.setenv(contract.ENV_CACHE_DIR, str(cache))
    data = datasets.load("cifar10", volume)
    assert np.array_equal(data.x, written)
    assert list((cache / datasets.CACHE_FOLDER).glob("*.npz")) == [cache / datasets.CACHE_FOLDER / "cifar10-train.npz"]
    assert not list((volume / datasets.CACHE_FOLDER).glob("*.npz")), "nothing written to the volume"
    (volume / "cifar-10-batches-py" / "data_batch_1").unlink()
    assert np.array_equal(datasets.load("cifar10", volume).x, written), "served from the pod's cache"


def test_mnist_from_its_on_disk_format(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    data = datasets.load("mnist", tmp_path)
    assert data.x.shape == (6, 1, 28, 28)
    assert np.array_equal(data.x[:, 0], written)
    assert data.labels(np.arange(6)).dtype == torch.int64


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_a_missing_data_set_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(datasets.DatasetUnavailable) as error:
        datasets.load(name, tmp_path / "empty")
    message = str(error.value)
    assert f"dataset {name} is not in the data folder {tmp_path / 'empty'}" in message
    assert "could not be downloaded" in message


def test_digits_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits

    expected = load_digits()
    data = datasets.load("digits", Path("/nonexistent"))
    assert np.array_equal(data.x.reshape(len(data.x), -1), expected.data)
    assert np.array_equal(data.y, expected.target)
    features = data.features(np.arange(len(data.y)))
    assert abs(float(features.mean())) < 0.05 and abs(float(features.std()) - 1) < 0.05


def test_synthetic_is_deterministic_and_digit_shaped() -> None:
    first, second = datasets.load("synthetic", Path()), datasets.load("synthetic", Path())
    assert first.x.shape == (datasets.SYNTHETIC_SAMPLES, 1, 8, 8)
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)


@pytest.mark.parametrize("model", list(MODEL_INPUTS))
def test_the_workload_builds_every_model_of_the_vocabulary_for_its_shape(model: ModelName) -> None:
    out = models.build(model.value)(torch.zeros(2, *MODEL_INPUTS[model]))
    assert out.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("dataset", list(DatasetName))
def test_auto_builds_the_model_of_the_data_sets_shape(dataset: DatasetName) -> None:
    model = resolve_model("auto", dataset.value)
    assert model == DATASETS[dataset].model and MODEL_INPUTS[model] == DATASETS[dataset].shape


def test_a_model_that_does_not_fit_the_data_set_is_named() -> None:
    with pytest.raises(VocabularyError, match="model resnet18 takes 3x32x32 inputs but dataset mnist has 1x28x28"):
        resolve_model("resnet18", "mnist")
    with pytest.raises(VocabularyError, match="unknown model 'vit'"):
        resolve_model("vit", "mnist")


def test_quickstart_cnn_is_flowers() -> None:
    cnn = models.build("cifar-cnn")
    assert [tuple(p.shape) for p in cnn.parameters()][::2] == [
        (6, 3, 5, 5),
        (16, 6, 5, 5),
        (120, 400),
        (84, 120),
        (10, 84),
    ]


def test_proximal_term_keeps_the_model_near_the_global_one() -> None:
    data = datasets.load("digits", Path())
    x, y = data.features(np.arange(300)), data.labels(np.arange(300))

    def drift(mu: float) -> float:
        torch.manual_seed(0)
        model = models.build("digits-cnn")
        start = [p.detach().clone() for p in model.parameters()]
        training.train(model, x, y, epochs=2, batch_size=16, learning_rate=0.05, seed=1, proximal_mu=mu)
        return sum(float((p.detach() - s).norm()) for p, s in zip(model.parameters(), start, strict=True))

    assert drift(10.0) < 0.5 * drift(0.0)


def test_training_learns_and_evaluation_counts() -> None:
    data = datasets.load("digits", Path())
    train, test = np.arange(0, 1400), np.arange(1400, 1797)
    torch.manual_seed(0)
    model = models.build("digits-cnn")
    loss = training.train(
        model, data.features(train), data.labels(train), epochs=3, batch_size=32, learning_rate=0.05, seed=0
    )
    eval_loss, accuracy = training.evaluate(model, data.features(test), data.labels(test), batch_size=64)
    assert loss < 1.5 and eval_loss < 0.5 and accuracy > 0.85
