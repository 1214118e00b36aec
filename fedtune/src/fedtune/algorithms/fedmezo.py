"""FedMeZO: federated finetuning with MeZO's zeroth-order SGD.

MeZO: Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS
2023, https://arxiv.org/abs/2305.17333 (Algorithm 1). Its federated form, FedMeZO: Ling
et al., "On the Convergence of Zeroth-Order Federated Tuning for Large Language Models",
KDD 2024, https://arxiv.org/abs/2402.05926. One of the zeroth-order baselines Spry
(Panchal et al., NeurIPS 2024) is compared against.

Algorithm (per round t)::

    Server:  sample M clients; send θ.
    Client m, for each local step s on batch b, seed path (round, m, s), ε = 1e-3:
        for k = 1..K (K = 1 by default: one perturbation per step):
            θ ← θ + ε z_k          # z_k ~ N(0, I) regenerated from its seed, tensor by tensor
            L₊ = L(θ; b)           # evaluation mode: both passes see the same function
            θ ← θ − 2ε z_k;  L₋ = L(θ; b)
            θ ← θ + ε z_k          # back to θ (to rounding), no z ever stored
            d_k = (L₊ − L₋) / (2ε)  # SPSA's projected gradient
        θ ← θ − η (λ θ + (1/K) Σ_k d_k z_k)   # z_k regenerated once more, in place
        per_epoch:      send θ
        per_iteration:  send the scalars d_{s,k}; the server makes the same moves from
                        the seeds and rebuilds θ bit for bit
    Server:  example-weighted mean, then θ ← ServerOptimizer(θ, mean − θ)

Memory: a step holds the model, the client's copy of its trainable tensors (what it
sends back) and one inference pass; no gradient, perturbation or optimizer state.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from fedtune.algorithms.base import ALGORITHMS, ClientTask, LocalParams
from fedtune.algorithms.fedfgd import FedFGD
from fedtune.algorithms.spry import (
    EstimatedGradientClient,
    ForwardGradParams,
    tangent_keys,
    trained_names,
)
from fedtune.grad import LossClosure, mezo_directional, mezo_replay_step_, seeded_sgd_step_
from fedtune.grad.estimators import MEZO_EPS, EstimateFn
from fedtune.models.base import State
from fedtune.optim import LocalOptimizer


class FedMeZOParams(ForwardGradParams):
    """FedMeZO's settings: MeZO's estimator and its in-place SGD."""

    estimator: Literal["mezo"] = Field("mezo", description="MeZO's two-point estimate, ε = 1e-3 (fixed)")
    optimizer: Literal["sgd"] = Field("sgd", description="MeZO updates in place with plain SGD")
    lr: float = Field(1e-4, gt=0, description="client learning rate η")

    @model_validator(mode="after")
    def _plain_sgd(self) -> FedMeZOParams:
        if self.momentum:
            raise ValueError("momentum: MeZO's in-place update is plain SGD (momentum would store a buffer); remove it")
        return self


class MeZOClient(EstimatedGradientClient):
    """MeZO's local steps on the task's tensors, perturbed and updated in place from seeds."""

    params: FedMeZOParams

    def train_step(
        self, estimate: EstimateFn, loss: LossClosure, theta: State, optimizer: LocalOptimizer, task: ClientTask, step: int
    ) -> tuple[float, list[float]]:
        cfg = self.params
        keys = tangent_keys(task, step)
        values, scalars = [], torch.empty(cfg.num_tangents, dtype=torch.float32)
        for k in range(cfg.num_tangents):
            value, d = mezo_directional(loss, theta, task.seed, keys, k, MEZO_EPS, cfg.tangent_distribution)
            values.append(float(value))
            scalars[k] = d.float()
        seeded_sgd_step_(theta, scalars, cfg.lr, task.seed, keys, cfg.weight_decay, cfg.tangent_distribution)
        return sum(values) / len(values), scalars.tolist()


def mezo_replay(params: FedMeZOParams, global_state: State, task: ClientTask, jvps: list[list[float]]) -> State:
    """Per-iteration mode, server side: a FedMeZO client's tensors from its scalars, bit for bit."""
    theta = {n: global_state[n].detach().clone() for n in trained_names(task, global_state)}
    for step, scalars in enumerate(jvps):
        mezo_replay_step_(theta, scalars, params.lr, task.seed, tangent_keys(task, step), MEZO_EPS,
                          params.weight_decay, params.tangent_distribution)
    return theta


@ALGORITHMS.register("fedmezo")
class FedMeZO(FedFGD):
    """Federated MeZO: every client trains every trainable tensor with zeroth-order SGD.

    Parameters (``[algorithm]`` table, :class:`FedMeZOParams`)
    ----------------------------------------------------------
    num_tangents : int, default 1
        Perturbations per local step (MeZO's n; two loss evaluations each).
    tangent_distribution : "gaussian" | "rademacher", default "gaussian"
        Distribution of the perturbations z.
    communication : "per_epoch" | "per_iteration", default "per_epoch"
        Send the trained tensors, or the K scalars of each step.
    lr, weight_decay : default 1e-4, 0.0
        MeZO's SGD step size η and weight decay λ (``optimizer`` is "sgd", momentum 0).
    local_epochs, batch_size, max_steps : default 1, 32, None
        Local training length.
    """

    name = "fedmezo"
    Params: ClassVar[type[LocalParams]] = FedMeZOParams
    Client = MeZOClient
    params: FedMeZOParams

    def replay(self, global_state: State, task: ClientTask, jvps: list[list[float]]) -> State:
        return mezo_replay(self.params, global_state, task, jvps)


__all__ = ["FedMeZO", "FedMeZOParams", "MeZOClient", "mezo_replay"]
