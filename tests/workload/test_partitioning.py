"""Partitioners: disjoint, complete, deterministic; Dirichlet with a small alpha skews the labels."""

from __future__ import annotations

import numpy as np
import pytest

from kubeflower_workload import partitioning

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
@pytest.mark.parametrize("clients", [1, 2, 7])
def test_every_sample_in_exactly_one_partition(scheme: str, clients: int) -> None:
    parts = partitioning.partition(LABELS, clients, scheme, alpha=0.5, seed=3)
    assert len(parts) == clients
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(len(LABELS)))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_split_other_seed_other_split(scheme: str) -> None:
    first = partitioning.partition(LABELS, 4, scheme, alpha=0.5, seed=42)
    again = partitioning.partition(LABELS, 4, scheme, alpha=0.5, seed=42)
    other = partitioning.partition(LABELS, 4, scheme, alpha=0.5, seed=43)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_parts_are_balanced() -> None:
    sizes = [len(p) for p in partitioning.iid(1001, 4, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def _label_skew(parts: list[np.ndarray]) -> float:
    """Mean over clients of the share of the client's most common label (0.1 = uniform)."""
    return float(np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]))


def test_small_alpha_skews_labels_large_alpha_does_not() -> None:
    skewed = partitioning.dirichlet(LABELS, 5, alpha=0.05, seed=1)
    even = partitioning.dirichlet(LABELS, 5, alpha=1000.0, seed=1)
    assert _label_skew(skewed) > 0.5
    assert _label_skew(even) < 0.15
    assert _label_skew(partitioning.iid(len(LABELS), 5, seed=1)) < 0.2


def test_dirichlet_gives_every_client_data() -> None:
    parts = partitioning.dirichlet(LABELS, 10, alpha=0.01, seed=0)
    assert min(len(p) for p in parts) >= partitioning.MIN_PARTITION_SIZE


def test_too_few_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot be split across 10 clients"):
        partitioning.partition(np.zeros(5, dtype=int), 10, "iid", 0.5, 0)
    with pytest.raises(ValueError, match="unknown partitioning 'shards'"):
        partitioning.partition(LABELS, 2, "shards", 0.5, 0)


def test_local_split_holds_out_the_test_fraction() -> None:
    indices = np.arange(100, 200)
    train, test = partitioning.train_test_split(indices, 0.2, seed=5)
    assert len(test) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, test]).tolist()) == indices.tolist()
    again_train, _ = partitioning.train_test_split(indices, 0.2, seed=5)
    assert np.array_equal(train, again_train)
    tiny_train, tiny_test = partitioning.train_test_split(np.arange(2), 0.01, seed=0)
    assert len(tiny_train) == 1 and len(tiny_test) == 1
