"""The built-in app's data sets: images as (N, C, H, W) arrays and integer labels.

`cifar10` and `mnist` come through torchvision into the data folder the pod mounts
(KUBEFLOWER_DATA_DIR), downloaded on first use and then kept there as one `.npz` per data set, so
that later messages (each runs in a fresh ClientApp process) neither import torchvision nor parse
the original files again. `digits` is read from the file scikit-learn ships, without importing
scikit-learn (about a second per message). `synthetic` is generated from a fixed seed.

Each client uses the data set's training split only, partitions it, and holds out its own test
part (see `partitioning`).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubeflower.core import contract
from kubeflower.core.vocabulary import DATASETS, NUM_CLASSES, DatasetName

DEFAULT_DATA_DIR = Path.home() / ".cache" / "kubeflower" / "data"
"""The data folder when KUBEFLOWER_DATA_DIR is not set (`kubeflower run`, a SuperNode started by hand)."""
CACHE_FOLDER = "kubeflower-cache"
"""Sub-folder of the data folder holding the prepared `.npz` arrays."""
SYNTHETIC_SAMPLES = 2000
SYNTHETIC_SEED = 1234


class DatasetUnavailable(Exception):
    """A data set that is neither in the data folder nor downloadable: a message for the user."""


@dataclass(frozen=True)
class DataSet:
    name: str
    x: np.ndarray
    """Raw samples, (N, C, H, W); uint8 for images, so CIFAR-10 stays 150 MB, not 600."""
    y: np.ndarray

    def features(self, indices: np.ndarray) -> Any:
        """The selected samples as a normalised float32 tensor (torch is imported by the caller)."""
        import torch

        norm = DATASETS[DatasetName(self.name)]
        x = self.x[indices].astype(np.float32) / norm.scale
        mean = np.asarray(norm.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(norm.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return torch.from_numpy((x - mean) / std)

    def labels(self, indices: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(self.y[indices].astype(np.int64))


def data_dir() -> Path:
    return Path(os.environ.get(contract.ENV_DATA_DIR) or DEFAULT_DATA_DIR)


def load(name: str, data_dir: Path) -> DataSet:
    """The training split of a data set; DatasetUnavailable when it cannot be had."""
    try:
        dataset = DatasetName(name)
    except ValueError:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(d.value for d in DatasetName)}") from None
    if dataset == DatasetName.DIGITS:
        x, y = _digits()
    elif dataset == DatasetName.SYNTHETIC:
        x, y = _synthetic()
    else:
        x, y = _cached(dataset, data_dir)
    return DataSet(name, x, y)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, from the CSV that `sklearn.datasets.load_digits` reads."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("dataset digits needs scikit-learn installed (it ships the data)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return data[:, :-1].reshape(-1, 1, 8, 8), data[:, -1].astype(np.int64)


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    """Ten noisy class prototypes of the digits' shape: learnable, and the same everywhere."""
    rng, shape = np.random.default_rng(SYNTHETIC_SEED), DATASETS[DatasetName.SYNTHETIC].shape
    prototypes = rng.normal(size=(NUM_CLASSES, *shape)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, SYNTHETIC_SAMPLES)
    x = prototypes[y] + rng.normal(scale=1.0, size=(SYNTHETIC_SAMPLES, *shape)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def _cache_folders(data_dir: Path) -> list[Path]:
    """Where prepared arrays are looked for, and written to the first that takes them: the data
    folder, then the pod's own cache folder (KUBEFLOWER_CACHE_DIR) when the data folder is the
    job's read-only data volume."""
    own = os.environ.get(contract.ENV_CACHE_DIR)
    return [data_dir / CACHE_FOLDER, *([Path(own) / CACHE_FOLDER] if own else [])]


def _cached(name: DatasetName, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    folders = _cache_folders(data_dir)
    for folder in folders:
        if (folder / f"{name.value}-train.npz").exists():
            with np.load(folder / f"{name.value}-train.npz") as arrays:
                return arrays["x"], arrays["y"]
    x, y = _from_torchvision(name, data_dir)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Clients may prepare the same data set at once: write aside, then rename atomically.
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz")
        except OSError:
            continue  # read-only: the next folder
        with os.fdopen(fd, "wb") as out:
            np.savez(out, x=x, y=y)
        os.replace(tmp, folder / f"{name.value}-train.npz")
        break
    return x, y


def _from_torchvision(name: DatasetName, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    cls = _torchvision_class(name)
    try:
        found = cls(str(data_dir), train=True, download=False)
    except RuntimeError:
        try:
            found = cls(str(data_dir), train=True, download=True)
        except Exception as exc:
            raise DatasetUnavailable(
                f"dataset {name.value} is not in the data folder {data_dir} and could not be downloaded "
                f"({type(exc).__name__}: {' '.join(str(exc).split())}); "
                "put it there (a read-only data volume, spec.data, must hold it already) "
                "from a machine that reaches the internet "
                f"(torchvision.datasets.{DATASETS[name].torchvision}"
                f"(root='{data_dir}', train=True, download=True)), or let the pods reach the internet"
            ) from None
    x = np.asarray(found.data, dtype=np.uint8)
    y = np.asarray(found.targets, dtype=np.int64)
    # CIFAR-10 is stored (N, H, W, C), MNIST (N, H, W): both become (N, C, H, W).
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None, :, :]
    return np.ascontiguousarray(x), y


def _torchvision_class(name: DatasetName) -> Any:
    """torchvision's data set class; imported here, so only a first load pays for torchvision."""
    from torchvision import datasets as tv

    if name != DatasetName.CIFAR10:
        return getattr(tv, str(DATASETS[name].torchvision))

    class TrustedCIFAR10(tv.CIFAR10):
        """CIFAR-10 that trusts the files present instead of re-hashing them.

        torchvision checks the archive's MD5 when it downloads it, so a cache it filled is
        verified already; a folder filled by hand (or a test's tiny copy in the same format) is
        the user's to vouch for.
        """

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as infile:
                self.classes = pickle.load(infile, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return TrustedCIFAR10
