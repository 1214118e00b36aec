"""``mnist1d``: generated locally, sized by its options, partitioned like the others."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fedtune.config import ConfigError, DataConfig
from fedtune.data import load_federated, load_raw
from fedtune.data.mnist1d import MNIST1DOptions, generate_mnist1d


def test_generates_the_requested_size_balanced_and_standardised() -> None:
    raw = load_raw("mnist1d", {"num_samples": 300})
    x, y = raw.examples.tensors["x"], raw.examples.labels
    assert raw.info.input_shape == (40,) and raw.info.num_classes == 10
    assert x.shape == (300, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [30] * 10  # 300 // 10 of each template
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-2)


def test_same_options_same_data_and_global_rngs_untouched() -> None:
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    a = generate_mnist1d(MNIST1DOptions(num_samples=100))
    assert (random.random(), np.random.random()) == expected  # the generator's set_seed is undone
    b = generate_mnist1d(MNIST1DOptions(num_samples=100))
    c = generate_mnist1d(MNIST1DOptions(num_samples=100, generator_seed=7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_dirichlet_partition_and_bad_options() -> None:
    cfg = DataConfig(name="mnist1d", num_clients=5, partition="dirichlet", alpha=0.5, val_fraction=0.2, options={"num_samples": 500})
    fed = load_federated(cfg, seed=0)
    assert len(fed.clients) == 5
    assert sum(len(c.train) + len(c.val) + len(c.test) for c in fed.clients) == 500
    assert min(len(c.val) for c in fed.clients) >= 1
    with pytest.raises(ConfigError, match="data.options.samples"):
        load_raw("mnist1d", {"samples": 10})
    with pytest.raises(ConfigError, match="data.options.num_samples"):
        load_raw("mnist1d", {"num_samples": 5})
