"""``synthetic``: the Synthetic(α, β) federated data of FedProx (Li et al. 2020).

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous
Networks" (MLSys 2020, https://arxiv.org/abs/1812.06127), Section 5.1, after Shamir et al.
(2014); the generator follows the authors' ``data/synthetic_*/generate_synthetic.py``,
which LEAF also ships. For user k:

- u_k ~ N(0, α²) and B_k ~ N(0, β²) (the code draws with *standard deviation* α and β);
- W_k ∈ R^{60×10} with entries ~ N(u_k, 1), b_k ∈ R^10 with entries ~ N(u_k, 1);
- v_k ∈ R^60 with entries ~ N(B_k, 1) (``iid``: all entries B_k, and one global W, b);
- x ~ N(v_k, Σ), Σ diagonal with Σ_jj = j^{-1.2};
- y = argmax softmax(W_k^T x + b_k).

α controls how much the local models differ, β how much the local inputs differ.
User k holds ⌊lognormal(4, 2)⌋ + 50 examples. Natural groups are the generating users.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset
from fedtune.seeding import numpy_rng

DIMENSION = 60
NUM_CLASSES = 10


class SyntheticOptions(DatasetOptions):
    """Options of ``synthetic`` (defaults: FedProx's Synthetic(1, 1) over 30 users)."""

    alpha: float = Field(1.0, ge=0, description="spread of the users' models (std of u_k)")
    beta: float = Field(1.0, ge=0, description="spread of the users' input means (std of B_k)")
    num_users: int = Field(30, ge=1, description="number of generating users (natural groups)")
    iid: bool = Field(
        False, description="FedProx's Synthetic-IID: one global model, input means B_k"
    )
    max_examples_per_user: int | None = Field(
        None, ge=1, description="cap on a user's lognormal size (None: no cap, as in FedProx)"
    )


def generate_synthetic(
    opts: SyntheticOptions, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (N, 60) float32, labels (N,) int64 and generating user (N,) of Synthetic(α, β)."""
    sizes = rng.lognormal(4, 2, opts.num_users).astype(int) + 50
    if opts.max_examples_per_user is not None:
        sizes = np.minimum(sizes, opts.max_examples_per_user)
    mean_w = rng.normal(0, opts.alpha, opts.num_users)
    mean_b = mean_w
    b_users = rng.normal(0, opts.beta, opts.num_users)
    std_x = np.power(np.arange(1, DIMENSION + 1), -1.2) ** 0.5
    if opts.iid:
        mean_x = np.ones((opts.num_users, DIMENSION)) * b_users[:, None]
        w_global = rng.normal(0, 1, (DIMENSION, NUM_CLASSES))
        b_global = rng.normal(0, 1, NUM_CLASSES)
    else:
        mean_x = rng.normal(b_users[:, None], 1, (opts.num_users, DIMENSION))
    xs, ys, users = [], [], []
    for k in range(opts.num_users):
        if opts.iid:
            w, b = w_global, b_global
        else:
            w = rng.normal(mean_w[k], 1, (DIMENSION, NUM_CLASSES))
            b = rng.normal(mean_b[k], 1, NUM_CLASSES)
        x = mean_x[k] + std_x * rng.standard_normal((sizes[k], DIMENSION))
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1))  # argmax of softmax = argmax of the logits
        users.append(np.full(sizes[k], k))
    return (
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys).astype(np.int64),
        np.concatenate(users),
    )


@register_dataset("synthetic", SyntheticOptions)
def load_synthetic(options: dict, seed: int) -> RawDataset:
    """FedProx Synthetic(α, β) logistic data, one natural group per user (Li et al. 2020)."""
    opts = parse_options(SyntheticOptions, options, "synthetic")
    x, y, users = generate_synthetic(opts, numpy_rng(seed, "synthetic"))
    info = DatasetInfo(
        name="synthetic",
        task="classification",
        num_classes=NUM_CLASSES,
        input_shape=(DIMENSION,),
        class_names=[str(c) for c in range(NUM_CLASSES)],
        extra={"alpha": opts.alpha, "beta": opts.beta, "iid": opts.iid},
    )
    examples = Examples({"x": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    return RawDataset(info=info, examples=examples, groups=users)


__all__ = ["SyntheticOptions", "generate_synthetic", "load_synthetic"]
