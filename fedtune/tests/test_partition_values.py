"""Partitioners, exactly: boundaries of the client count, the Dirichlet minimum size,
the fair-share cap, label skew by hand, and the split a seed gives pinned across versions
(a published experiment's clients must not change under it)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedtune.config import ConfigError
from fedtune.data.partition import dirichlet_min_size, label_skew, partition
from fedtune.seeding import numpy_rng

LABELS = np.repeat(np.arange(10), 200)
GROUPS = np.arange(len(LABELS)) % 37


def _digest(parts: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(p.astype(np.int64).tobytes() + b"|" for p in parts)).hexdigest()[:16]


@pytest.mark.parametrize(("name", "alpha", "clients", "sizes", "digest"), [
    ("iid", 1.0, 20, [100] * 20, "c80c5d0c726bcf8f"),
    ("dirichlet", 0.1, 20, [116, 182, 33, 104, 52, 218, 185, 127, 38, 123, 25, 71, 94, 102, 42,
                            31, 170, 26, 146, 115], "390edfec876f7db5"),
    ("dirichlet", 0.5, 20, [103, 141, 84, 132, 84, 143, 85, 98, 104, 148, 110, 85, 100, 62, 49,
                            106, 88, 71, 100, 107], "2a9a47e11ff56b4b"),
    ("dirichlet", 100.0, 7, [269, 280, 285, 292, 285, 282, 307], "39539e5695bdb554"),
    ("natural", 1.0, 5, [55, 55] + [54] * 35, "9ce5f49fb86f4ec1"),
])
def test_a_seed_gives_the_same_split_in_every_version(name, alpha, clients, sizes, digest):
    parts = partition(name, LABELS, GROUPS, clients, alpha, numpy_rng(3, "golden"))
    assert [len(p) for p in parts] == sizes
    assert _digest(parts) == digest
    assert all(p.dtype == np.int64 for p in parts)


def test_the_repaired_split_is_pinned_too():
    labels = np.repeat(np.arange(5), 20)
    parts = partition("dirichlet", labels, None, 60, 0.01, numpy_rng(0, "t"))
    assert [len(p) for p in parts] == [
        5, 1, 1, 1, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        5, 1, 1, 1, 5, 1, 2, 5, 1, 1, 1, 5, 1, 1, 1, 1, 1, 1, 5, 1, 1, 1, 1, 1, 6, 1, 1, 1, 1, 3]
    assert _digest(parts) == "fe4c0fe7e76d5a49"
    assert all(p.dtype == np.int64 for p in parts)


def test_client_count_boundaries():
    labels = np.arange(6) % 2
    for name in ("iid", "dirichlet"):
        (only,) = partition(name, labels, None, 1, 1.0, numpy_rng(0, "t"))
        assert only.tolist() == list(range(6))
        every = partition(name, labels, None, 6, 1.0, numpy_rng(0, "t"))
        assert sorted(len(p) for p in every) == [1] * 6
    with pytest.raises(ConfigError, match=r"^data.num_clients: must be at least 1, got 0$"):
        partition("iid", labels, None, 0, 1.0, numpy_rng(0, "t"))
    with pytest.raises(ConfigError, match=r"7 clients but the dataset has only 6 examples; use at most that many clients$"):
        partition("iid", labels, None, 7, 1.0, numpy_rng(0, "t"))
    with pytest.raises(ConfigError, match=r"^data.partition: 'dirichlet' needs one class label per example, "
                                          r"and this dataset has sequence labels; use 'iid' or 'natural'$"):
        partition("dirichlet", np.zeros((6, 3)), None, 2, 1.0, numpy_rng(0, "t"))


@pytest.mark.parametrize(("n", "clients", "expected"), [
    (1000, 10, 10),  # NIID-Bench's 10 when clients hold 20 or more on average
    (22, 1, 10),  # 11 on the half-mean rule, capped at 10
    (100, 10, 5),  # half the mean size
    (11, 1, 5),  # rounded down
    (100, 60, 1),  # at least one
])
def test_dirichlet_min_size(n, clients, expected):
    assert dirichlet_min_size(n, clients) == expected
    assert isinstance(dirichlet_min_size(n, clients), int)


def test_a_client_at_its_fair_share_gets_no_later_class():
    for seed in range(5):
        parts = partition("dirichlet", LABELS, None, 20, 0.3, numpy_rng(seed, "cap"))
        fair = len(LABELS) / 20
        for part in parts:
            held = 0
            for c in range(10):
                count = int((LABELS[part] == c).sum())
                if held >= fair:
                    assert count == 0, (seed, c, held)
                held += count


def test_label_skew_by_hand():
    labels = np.array([0, 0, 1, 1])
    # global (½, ½); client [0] holds (1, 0): TV ½; client [1, 2, 3] holds (⅓, ⅔): TV ⅙
    assert label_skew([np.array([0]), np.array([1, 2, 3])], labels) == pytest.approx((0.5 + 1 / 6) / 2)
    assert label_skew([np.array([0, 2]), np.array([1, 3])], labels) == 0.0
    # global (¼, ¼, ½); the client holds (⅓, ⅓, ⅓): TV ½ (1/12 + 1/12 + 1/6) = ⅙
    assert label_skew([np.array([0, 1, 2])], np.array([0, 1, 2, 2])) == pytest.approx(1 / 6)


class _OneHotRng:
    """A stand-in generator: no shuffling, and every Dirichlet draw puts all of a class on
    client 0 (counted, to see how many draws the partitioner made)."""

    def __init__(self) -> None:
        self.draws = 0

    def permutation(self, x):  # noqa: ANN001
        return np.asarray(x)

    def dirichlet(self, alpha):  # noqa: ANN001
        self.draws += 1
        out = np.zeros(len(alpha))
        out[0] = 1.0
        return out


def test_a_class_with_no_eligible_client_is_split_evenly_and_a_draw_at_the_minimum_is_kept():
    # 2 classes × 10 examples, 2 clients: class 0 all to client 0, which then holds its fair
    # share (10); class 1's draw also names only client 0, so it is split evenly instead.
    labels = np.repeat(np.arange(2), 10)
    rng = _OneHotRng()
    parts = partition("dirichlet", labels, None, 2, 1.0, rng)
    assert parts[0].tolist() == list(range(15)) and parts[1].tolist() == list(range(15, 20))
    # the smaller client holds exactly the minimum size (5): the first draw is kept
    assert dirichlet_min_size(20, 2) == 5 and rng.draws == 2


def test_natural_needs_groups_message():
    with pytest.raises(ConfigError, match=r"^data.partition: 'natural' needs a dataset with natural groups "
                                          r"\(shakespeare, synthetic, or hf with a group column\); "
                                          r"use 'iid' or 'dirichlet'$"):
        partition("natural", LABELS, None, 10, 1.0, numpy_rng(0, "t"))
