"""Partitioners: coverage, determinism, Dirichlet skew against α, natural groups, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedtune.config import ConfigError, DataConfig
from fedtune.data import load_federated
from fedtune.data.partition import PARTITIONERS, label_skew, partition
from fedtune.seeding import numpy_rng

LABELS = np.repeat(np.arange(10), 200)  # 2,000 examples, 10 balanced classes
GROUPS = np.arange(len(LABELS)) % 37


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "natural"])
def test_every_example_in_exactly_one_client(name):
    parts = partition(name, LABELS, GROUPS, 50, 0.3, numpy_rng(0, "t"))
    _assert_exact_cover(parts, len(LABELS))


@pytest.mark.parametrize("name", ["iid", "dirichlet"])
def test_seeded_determinism(name):
    a = partition(name, LABELS, None, 20, 0.5, numpy_rng(1, "t"))
    b = partition(name, LABELS, None, 20, 0.5, numpy_rng(1, "t"))
    c = partition(name, LABELS, None, 20, 0.5, numpy_rng(2, "t"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_are_balanced():
    sizes = [len(p) for p in partition("iid", LABELS, None, 30, 1.0, numpy_rng(0, "t"))]
    assert max(sizes) - min(sizes) <= 1
    assert label_skew(partition("iid", LABELS, None, 10, 1.0, numpy_rng(0, "t")), LABELS) < 0.1


def test_dirichlet_skew_shrinks_as_alpha_grows():
    skews = []
    for alpha in [0.05, 0.3, 1.0, 10.0, 1000.0]:
        runs = [
            label_skew(partition("dirichlet", LABELS, None, 40, alpha, numpy_rng(s, "t")), LABELS)
            for s in range(3)
        ]
        skews.append(float(np.mean(runs)))
    assert all(a > b for a, b in zip(skews, skews[1:], strict=False)), skews
    assert skews[0] > 0.6 and skews[-1] < 0.15, skews


def test_dirichlet_repairs_empty_clients():
    # tiny α and as many clients as a fifth of the examples: redraws fail, repair kicks in
    labels = np.repeat(np.arange(5), 20)
    parts = partition("dirichlet", labels, None, 60, 0.01, numpy_rng(0, "t"))
    _assert_exact_cover(parts, 100)


def test_natural_one_client_per_group():
    groups = np.array(["b", "a", "b", "c", "a", "b"])
    parts = partition("natural", np.zeros(6), groups, 999, 1.0, numpy_rng(0, "t"))
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2, 5], [3]]


def test_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^data.num_clients: 3000 clients"):
        partition("iid", LABELS, None, 3000, 1.0, numpy_rng(0, "t"))
    with pytest.raises(ConfigError, match=r"^data.partition: 'natural' needs"):
        partition("natural", LABELS, None, 10, 1.0, numpy_rng(0, "t"))
    with pytest.raises(ConfigError, match=r"^data.partition: unknown partition 'shards'"):
        partition("shards", LABELS, None, 10, 1.0, numpy_rng(0, "t"))
    with pytest.raises(ConfigError, match=r"^data.alpha"):
        partition("dirichlet", LABELS, None, 10, 0.0, numpy_rng(0, "t"))
    assert PARTITIONERS.names() == ["dirichlet", "iid", "natural"]


def test_load_federated_mnist_dirichlet():
    cfg = DataConfig(name="mnist", num_clients=100, partition="dirichlet", alpha=0.3)
    fed = load_federated(cfg, seed=0)
    assert fed.num_clients == 100
    total = sum(len(c.train) + len(c.val) + len(c.test) for c in fed.clients)
    assert total == 5000
    assert all(len(c.train) > 0 for c in fed.clients)
    # fractions are respected per client (rounded down)
    c = fed.clients[0]
    n = len(c.train) + len(c.val) + len(c.test)
    assert len(c.test) == int(n * 0.2) and len(c.val) == int(n * 0.1)
    again = load_federated(cfg, seed=0)
    assert all(
        np.array_equal(a.train.labels.numpy(), b.train.labels.numpy())
        for a, b in zip(fed.clients, again.clients, strict=True)
    )
    # α = 0.3: most clients hold few classes
    assert np.median([len(np.unique(c.train.labels.numpy())) for c in fed.clients]) <= 6
