"""Shared fixtures: small, fast experiments on the real digits data, and the tiny
random Hugging Face models (``hf_tiny.py``), saved once per test session."""

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


class _TinyModels(dict):
    """family -> folder of the tiny model; each family is saved on first use only."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, family):
        from hf_tiny import save_tiny

        self[family] = path = save_tiny(family, self.root)
        return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir["bert" | "gpt2" | "llama"]``: the folder of that tiny model, built once per session."""
    return _TinyModels(tmp_path_factory.mktemp("hf"))


@pytest.fixture
def make_experiment(tmp_path):
    return lambda **kw: small_experiment(tmp_path, **kw)
