"""Splitting a data set across clients: pure, seeded, and the same on every client.

Every client computes the whole split from the labels and the seed and keeps its own part, so no
coordinator hands out indices and a restarted client gets the same data back.
"""

from __future__ import annotations

import numpy as np

MIN_PARTITION_SIZE = 2
"""Dirichlet draws are repeated until every client holds at least this many samples (train + test)."""
MAX_DIRICHLET_DRAWS = 100


def iid(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """A random permutation cut into near-equal parts."""
    _check(num_samples, num_partitions)
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, shares for each client drawn from Dirichlet(alpha): small alpha, skewed labels.

    Draws repeat (same generator, so still deterministic) until every client has at least
    MIN_PARTITION_SIZE samples; a split that cannot get there is an error the user can act on.
    """
    _check(len(labels), num_partitions)
    if alpha <= 0:
        raise ValueError(f"dirichlet-alpha must be > 0 (got {alpha})")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in result) >= MIN_PARTITION_SIZE:
            return result
    raise ValueError(
        f"a Dirichlet split with alpha={alpha} left a client with fewer than {MIN_PARTITION_SIZE} "
        f"samples after {MAX_DIRICHLET_DRAWS} draws ({len(labels)} samples, {num_partitions} clients); "
        "raise partitioning.alpha or use fewer clients"
    )


def partition(labels: np.ndarray, num_partitions: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    """Indices of each client's samples; together they cover every sample exactly once."""
    if scheme == "iid":
        return iid(len(labels), num_partitions, seed)
    if scheme == "dirichlet":
        return dirichlet(labels, num_partitions, alpha, seed)
    raise ValueError(f"unknown partitioning {scheme!r}; use iid or dirichlet")


def train_test_split(indices: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A client's local hold-out: at least one sample on each side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test-fraction must be between 0 and 1 (got {test_fraction})")
    if len(indices) < 2:
        raise ValueError(f"a partition of {len(indices)} sample(s) cannot be split into train and test")
    shuffled = np.random.default_rng(seed).permutation(indices)
    num_test = min(max(1, round(len(indices) * test_fraction)), len(indices) - 1)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])


def _check(num_samples: int, num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"num-partitions must be >= 1 (got {num_partitions})")
    if num_samples < num_partitions * MIN_PARTITION_SIZE:
        raise ValueError(
            f"{num_samples} samples cannot be split across {num_partitions} clients "
            f"(each needs at least {MIN_PARTITION_SIZE}); use fewer clients or a larger data set"
        )
