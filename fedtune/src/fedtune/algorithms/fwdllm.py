"""FwdLLM: federated finetuning with forward gradients on guide-selected, paced perturbations.

Xu et al., "FwdLLM: Efficient Federated Finetuning of Large Language Models with Perturbed
Inferences", USENIX ATC 2024, https://arxiv.org/abs/2308.13894. One of the baselines
Spry (Panchal et al., NeurIPS 2024) is compared against; the estimator is
:func:`fedtune.grad.fwdllm_gradient`.

Algorithm (per round t)::

    Server:  sample M clients; send θ and Δ_{t−1} = θ_t − θ_{t−1}, the previous global
             update (none in round 1), in each client's task.
    Client m, for each local step s on batch b, seed path (round, m, s):
        score all N candidates v_c ~ N(0, I) by |cos(v_c, Δ_{t−1})|          # nothing stored
        take them best first: d = jvp(L(·; b), θ, v) for each, until
            tr Cov(d v)/k ≤ τ (‖ḡ_k‖² − tr Cov(d v)/k)  (k ≥ K_min)  or  k = K_max   # pacing
        g_s = (1/k) Σ d_i v_i;   θ ← LocalOptimizer(θ, g_s)
        send θ
    Server:  θ_{t+1} ← ServerOptimizer(θ_t, mean − θ_t);  Δ_t = θ_{t+1} − θ_t

Δ travels in the task (:attr:`ClientTask.guide`), so a client in another process needs no
shared state, and it is part of the server state a checkpoint holds. The tangents a
client uses depend on Δ, so per-iteration communication is refused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from fedtune.algorithms.base import ALGORITHMS, ClientResult, ClientTask, LocalParams
from fedtune.algorithms.fedfgd import FedFGD
from fedtune.algorithms.spry import EstimatedGradientClient, ForwardGradParams
from fedtune.grad import fwdllm_gradient
from fedtune.grad.estimators import EstimateFn
from fedtune.models.base import State, state_bytes


class FwdLLMParams(ForwardGradParams):
    """FwdLLM's settings: forward gradients, candidate pool, variance pacing."""

    estimator: Literal["fwdllm"] = Field("fwdllm", description="forward gradients on guide-selected tangents (fixed)")
    num_tangents: int = Field(1, ge=1, description="K_min: tangents every step uses")
    max_tangents: int = Field(8, ge=1, description="K_max: the most tangents a step uses")
    num_candidates: int = Field(32, ge=1, description="N: candidate tangents scored against the previous global update")
    variance_threshold: float | None = Field(
        100.0, gt=0, description="τ: stop adding tangents once the mean's noise-to-signal ratio ≤ τ; None: always K_max"
    )

    @model_validator(mode="after")
    def _pool(self) -> FwdLLMParams:
        if self.max_tangents < self.num_tangents:
            raise ValueError(f"max_tangents ({self.max_tangents}) must be at least num_tangents ({self.num_tangents})")
        if self.num_candidates < self.max_tangents:
            raise ValueError(f"num_candidates ({self.num_candidates}) must be at least max_tangents ({self.max_tangents})")
        return self


class FwdLLMClient(EstimatedGradientClient):
    """Forward-gradient local training whose tangents are chosen by the task's guide."""

    params: FwdLLMParams

    def estimator(self, task: ClientTask) -> EstimateFn:
        cfg = self.params
        return functools.partial(fwdllm_gradient, guide=task.guide, num_candidates=cfg.num_candidates,
                                 max_tangents=cfg.max_tangents, variance_threshold=cfg.variance_threshold)


@ALGORITHMS.register("fwdllm")
class FwdLLM(FedFGD):
    """FwdLLM: every client trains every trainable tensor with guided, paced forward gradients.

    Parameters (``[algorithm]`` table, :class:`FwdLLMParams`)
    --------------------------------------------------------
    num_tangents, max_tangents : int, default 1, 8
        K_min and K_max, the tangents (jvp passes) of a step.
    num_candidates : int, default 32
        N, the candidate pool scored by |cos| with the previous global update.
    variance_threshold : float | None, default 100.0
        τ of the pacing rule (noise-to-signal ratio of the mean); None: always K_max.
    tangent_distribution : "gaussian" | "rademacher", default "gaussian"
    optimizer, lr, weight_decay : default "adamw", 1e-4, 0.0
    local_epochs, batch_size, max_steps : default 1, 32, None
    """

    name = "fwdllm"
    Params: ClassVar[type[LocalParams]] = FwdLLMParams
    Client = FwdLLMClient
    params: FwdLLMParams

    def __init__(self, params: LocalParams, server_optimizer) -> None:
        super().__init__(params, server_optimizer)
        self.previous_update: State | None = None  # Δ_{t−1}; None before the first update

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        tasks = super().configure_round(round, sampled_client_ids, global_state, seed)
        return {cid: dataclasses.replace(task, guide=self.previous_update) for cid, task in tasks.items()}

    def bytes_down(self, task: ClientTask, global_state: State) -> int:
        return super().bytes_down(task, global_state) + (state_bytes(task.guide) if task.guide is not None else 0)

    def aggregate(self, round: int, global_state: State, results: list[ClientResult]) -> State:
        new = super().aggregate(round, global_state, results)
        self.previous_update = {n: (new[n] - global_state[n]).detach().clone() for n in global_state}
        return new

    def state_dict(self) -> dict:
        return {**super().state_dict(), "previous_update": self.previous_update}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.previous_update = state.get("previous_update")


__all__ = ["FwdLLM", "FwdLLMClient", "FwdLLMParams"]
