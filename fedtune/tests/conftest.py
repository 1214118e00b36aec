"""Shared fixtures: small, fast experiments on the real digits data."""

from __future__ import annotations

import pytest
import torch

from fedtune.config import load_experiment

torch.set_num_threads(1)


def small_experiment(tmp_path, **overrides):
    raw = {
        "name": "small",
        "seed": 3,
        "rounds": 4,
        "clients_per_round": 4,
        "output": str(tmp_path / "run"),
        "data": {"name": "digits", "num_clients": 8, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "algorithm": {"name": "fedavg", "local_epochs": 2, "batch_size": 16, "lr": 0.3},
        "server": {"name": "fedavg"},
        "eval": {"every": 2},
        "checkpoint": {"every": 2},
    }
    for key, value in overrides.items():
        node = raw
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return load_experiment(raw=raw)


@pytest.fixture
def make_experiment(tmp_path):
    return lambda **kw: small_experiment(tmp_path, **kw)
