"""myfl: a fedtune plugin with a server optimizer and an algorithm of its own.

- ``myfl-avgm``: FedAvgM, server momentum (Hsu et al., 2019, arXiv:1909.06335):
  v ← β v + Δ, x ← x + η v, with Δ the clients' mean update.
- ``myfl-clip``: FedAvg whose clients clip their update to an L2 norm of at most C
  before sending it (the clipping step of DP-FedAvg, McMahan et al., ICLR 2018, without
  the noise): Δ_k ← Δ_k · min(1, C / ‖Δ_k‖).

Importing this module registers both; fedtune imports it from ``plugins = ["myfl"]``,
``--plugin myfl`` or, once the package is installed, its entry point.
"""

from __future__ import annotations

import math

from pydantic import Field

from fedtune.algorithms import ALGORITHMS, Algorithm, Client, LocalParams
from fedtune.server import SERVER_OPTIMIZERS, ServerOptimizer, ServerParams, State, to_cpu


class AvgMParams(ServerParams):
    lr: float = Field(1.0, gt=0, description="server learning rate η")
    beta: float = Field(0.9, ge=0, lt=1, description="server momentum β")


@SERVER_OPTIMIZERS.register("myfl-avgm")
class FedAvgM(ServerOptimizer):
    """Server momentum: v ← β v + Δ, x ← x + η v (per tensor; v starts at zero)."""

    Params = AvgMParams
    params: AvgMParams

    def __init__(self, params: AvgMParams | None = None, **overrides) -> None:
        super().__init__(params, **overrides)
        self.v: State = {}

    def step(self, params: State, delta: State) -> State:
        for k, d in delta.items():
            self.v[k] = self.params.beta * self.v[k] + d if k in self.v else d.clone()
        return {k: params[k] + self.params.lr * self.v[k] for k in delta}

    def state_dict(self) -> dict:
        return {"v": to_cpu(self.v)}  # checkpoints hold CPU tensors

    def load_state_dict(self, state: dict) -> None:
        self.v = dict(state["v"])

    def round_metrics(self) -> dict[str, float]:
        return {"momentum_norm": math.sqrt(sum(float(v.pow(2).sum()) for v in self.v.values()))}


class ClipParams(LocalParams):
    clip: float = Field(1.0, gt=0, description="largest L2 norm C of a client's update")


class ClipClient(Client):
    """FedAvg's local training, then the update is scaled to a norm of at most C."""

    params: ClipParams

    def fit(self, model, global_state, data, task, state=None):
        result, new_state = super().fit(model, global_state, data, task, state)
        delta = {k: t - global_state[k] for k, t in result.tensors.items()}
        norm = math.sqrt(sum(float(d.pow(2).sum()) for d in delta.values()))
        scale = min(1.0, self.params.clip / norm) if norm > 0 else 1.0
        result.tensors = {k: global_state[k] + scale * d for k, d in delta.items()}
        result.metrics["clip_scale"] = scale  # metrics.jsonl: client_clip_scale, per client
        return result, new_state


@ALGORITHMS.register("myfl-clip")
class FedClip(Algorithm):
    """FedAvg's server with clients that clip their update (:class:`ClipClient`)."""

    name = "myfl-clip"
    Params = ClipParams
    Client = ClipClient


__all__ = ["FedAvgM", "FedClip"]
