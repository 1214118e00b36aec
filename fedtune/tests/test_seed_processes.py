"""The same seed in two separate processes gives the same partition and the same tangents.

Reproducibility across processes is what lets a resumed run equal an uninterrupted one
and a server regenerate a client's tangents. Each child process gets a different
``PYTHONHASHSEED``, so a seed derived from Python's randomized ``hash()`` of a string
would make the two processes disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import torch

from fedtune.data.partition import partition
from fedtune.grad import make_tangents
from fedtune.seeding import derive_seed, numpy_rng

CHILD = r"""
import hashlib, json, sys
import numpy as np
import torch
from fedtune.data.partition import partition
from fedtune.grad import make_tangents
from fedtune.seeding import derive_seed, numpy_rng

labels = np.repeat(np.arange(10), 60)
groups = np.arange(len(labels)) % 13
out = {"seeds": [derive_seed(7, "tangent", 3, 1, 2, "layer.0.weight"), derive_seed(0)]}
for name in ("iid", "dirichlet", "natural"):
    parts = partition(name, labels, groups, 20, 0.3, numpy_rng(7, "partition"))
    out[name] = [p.tolist() for p in parts]
shapes = {"a.lora_A": (2, 8), "a.lora_B": (8, 2), "b.lora_A": (2, 8), "head.bias": (3,)}
params = {n: torch.empty(s, device="meta") for n, s in shapes.items()}
for dist in ("gaussian", "rademacher"):
    for k in range(2):
        v = make_tangents(params, 7, (3, 1, 2), k, dist)
        out[f"{dist}{k}"] = {n: hashlib.sha256(t.numpy().tobytes()).hexdigest() for n, t in v.items()}
json.dump(out, sys.stdout)
"""


def _child(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_same_seed_in_two_processes_gives_the_same_partitions_and_tangents():
    first, second = _child("1"), _child("2")
    assert first == second
    # and the same as in this process (a third, with its own hash seed)
    labels = np.repeat(np.arange(10), 60)
    groups = np.arange(len(labels)) % 13
    for name in ("iid", "dirichlet", "natural"):
        parts = partition(name, labels, groups, 20, 0.3, numpy_rng(7, "partition"))
        assert [p.tolist() for p in parts] == first[name]
    assert first["seeds"] == [derive_seed(7, "tangent", 3, 1, 2, "layer.0.weight"), derive_seed(0)]
    params = {"a.lora_A": torch.empty(2, 8), "a.lora_B": torch.empty(8, 2),
              "b.lora_A": torch.empty(2, 8), "head.bias": torch.empty(3)}
    v = make_tangents(params, 7, (3, 1, 2), 1, "gaussian")
    assert {n: hashlib.sha256(t.numpy().tobytes()).hexdigest() for n, t in v.items()} == first["gaussian1"]
    # the tangents are not all one draw: tensors of the same shape get different directions
    assert first["gaussian0"]["a.lora_A"] != first["gaussian0"]["b.lora_A"]
    assert first["gaussian0"] != first["gaussian1"] and first["rademacher0"] != first["gaussian0"]
    # the Dirichlet split is a real label skew, not a trivial one
    assert len({len(p) for p in first["dirichlet"]}) > 1
