"""BAFFLE: federated learning without backpropagation, from loss differences.

Feng et al., "Does Federated Learning Really Need Backpropagation?" (BAFFLE), 2023,
https://arxiv.org/abs/2301.12195. Each client estimates its gradient by Stein's identity
from K pairs of forward passes; one of the zeroth-order baselines Spry (Panchal et al.,
NeurIPS 2024) is compared against.

Algorithm (per round t)::

    Server:  sample M clients; send θ.
    Client m, on its batch b (one step per round by default, as in FedSGD):
        for k = 1..K:  v_k ~ N(0, I), seeded by (seed, round, m, step, k, tensor)
                       d_k = (L(θ + σ v_k; b) − L(θ − σ v_k; b)) / (2σ)     σ = 1e-4
        g = (1/K) Σ_k d_k v_k                                               # eval mode
        per_iteration (default): send the K scalars d_k; the server regenerates v_k
        per_epoch:               apply the local optimizer and send θ
    Server:  θ ← ServerOptimizer(θ, mean over clients of (θ − η g) − θ)

The divisor is 2σ: with v = δ/σ for BAFFLE's perturbation δ ~ N(0, σ² I), Stein's
identity gives E[δ (L(θ+δ) − L(θ−δ))] / (2σ²) = ∇L, i.e. the central difference above
(the authors' released code divides by another quantity; DESIGN, Spry).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fedtune.algorithms.base import ALGORITHMS, LocalParams
from fedtune.algorithms.fedfgd import FedFGD
from fedtune.algorithms.spry import ForwardGradParams


class BaffleParams(ForwardGradParams):
    """BAFFLE's settings: K central differences, one step a round, scalars sent."""

    estimator: Literal["baffle"] = Field("baffle", description="central differences with σ = 1e-4 (fixed)")
    num_tangents: int = Field(20, ge=1, description="K: perturbation pairs per step")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="client optimizer")
    lr: float = Field(1e-2, gt=0, description="client learning rate")
    batch_size: int = Field(64, ge=1, description="examples of the step's loss")
    max_steps: int | None = Field(1, ge=1, description="local steps per round (1: FedSGD-style)")
    communication: Literal["per_epoch", "per_iteration"] = Field(
        "per_iteration", description="send the K scalars of each step (default), or the updated tensors"
    )


@ALGORITHMS.register("baffle")
class Baffle(FedFGD):
    """BAFFLE: every client estimates the gradient of every trainable tensor from loss differences.

    Parameters (``[algorithm]`` table, :class:`BaffleParams`)
    --------------------------------------------------------
    num_tangents : int, default 20
        K, perturbation pairs per step (2K forward passes).
    tangent_distribution : "gaussian" | "rademacher", default "gaussian"
        Distribution of the directions v_k.
    communication : "per_iteration" | "per_epoch", default "per_iteration"
        The K scalars of each step, or the trained tensors.
    optimizer, lr, weight_decay : default "sgd", 1e-2, 0.0
        Local optimizer (the server replays it exactly in per-iteration mode).
    batch_size, max_steps, local_epochs : default 64, 1, 1
        One step per round on a batch of 64 unless set otherwise.
    """

    name = "baffle"
    Params: ClassVar[type[LocalParams]] = BaffleParams


__all__ = ["Baffle", "BaffleParams"]
