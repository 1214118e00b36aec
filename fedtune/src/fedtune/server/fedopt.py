"""Adaptive federated optimization (Reddi et al., ICLR 2021, https://arxiv.org/abs/2003.00295).

Algorithm 2 of the paper, per coordinate, with Δ_t the aggregated pseudo-gradient::

    m_t = β1 m_{t-1} + (1 - β1) Δ_t
    v_t = second-moment update of the subclass (Adagrad / Adam / Yogi)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

with m_0 = v_0 = 0 and no bias correction. ``bias_correction=True`` scales η each
round by √(1 - β2^(t+1)) / (1 - β1^(t+1)) (t = server step from 1), as Flower's
FedAdam does, so that runs can be compared with Flower's.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from fedtune.server.base import (
    SERVER_OPTIMIZERS,
    Decay,
    Positive,
    ServerOptimizer,
    ServerParams,
    State,
    to_cpu,
)

_QUANTILE_SAMPLE = 1 << 20  # coordinates used for quantiles (a strided sample beyond this)


def lr_summary(lr: float, denominators: list[Tensor]) -> dict[str, float]:
    """Mean, 5/50/95% quantiles and max of the per-coordinate effective lr η / denominator."""
    if not denominators:
        return {}
    eff = lr / torch.cat([x.detach().flatten().to(torch.float64) for x in denominators])
    sample = eff[:: max(1, eff.numel() // _QUANTILE_SAMPLE)]
    q = torch.quantile(sample, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64, device=sample.device))
    return {
        "eff_lr_mean": float(eff.mean()),
        "eff_lr_q05": float(q[0]),
        "eff_lr_q50": float(q[1]),
        "eff_lr_q95": float(q[2]),
        "eff_lr_max": float(eff.max()),
    }


class FedOptParams(ServerParams):
    """Hyperparameters of FedAdagrad, FedAdam and FedYogi."""

    lr: Positive = Field(1e-2, description="server learning rate η")
    beta1: Decay = Field(0.9, description="first-moment decay β1, in [0, 1)")
    beta2: Decay = Field(0.99, description="second-moment decay β2, in [0, 1) (unused by FedAdagrad)")
    tau: Positive = Field(1e-3, description="adaptivity τ added to √v")
    bias_correction: bool = Field(
        False, description="scale η by √(1 - β2^(t+1)) / (1 - β1^(t+1)) as Flower's FedAdam does"
    )


class FedOpt(ServerOptimizer):
    """Base of FedAdagrad, FedAdam and FedYogi: holds m, v and the step count.

    Parameters: :class:`FedOptParams` (``lr`` 1e-2, ``beta1`` 0.9, ``beta2`` 0.99,
    ``tau`` 1e-3, ``bias_correction`` False), given as an object or by name.
    """

    Params = FedOptParams
    params: FedOptParams

    def __init__(self, params: FedOptParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        p = self.params
        self.lr, self.beta1, self.beta2, self.tau = p.lr, p.beta1, p.beta2, p.tau
        self.bias_correction = p.bias_correction
        self.m: State = {}
        self.v: State = {}
        self.t = 0
        self._metrics: dict[str, float] = {}

    @abstractmethod
    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        """v_t from v_{t-1} and Δ_t."""

    def effective_lr(self) -> float:
        if not self.bias_correction:
            return self.lr
        t = self.t
        return self.lr * (1 - self.beta2 ** (t + 1)) ** 0.5 / (1 - self.beta1 ** (t + 1))

    def step(self, params: State, delta: State) -> State:
        self.t += 1
        lr = self.effective_lr()
        out, denominators = {}, []
        for k, d in delta.items():
            # .to(): state loaded from a CPU checkpoint follows the update's device
            m = self.m.get(k, torch.zeros_like(d)).to(d.device)
            v = self.v.get(k, torch.zeros_like(d)).to(d.device)
            m = self.beta1 * m + (1 - self.beta1) * d
            v = self.second_moment(v, d)
            self.m[k], self.v[k] = m, v
            denominators.append(v.sqrt() + self.tau)
            out[k] = params[k] + lr * m / denominators[-1]
        self._metrics = lr_summary(lr, denominators)
        return out

    def round_metrics(self) -> dict[str, float]:
        """``eff_lr_*``: mean and quantiles over coordinates of η / (√v_t + τ) of the last step."""
        return dict(self._metrics)

    def state_dict(self) -> dict:
        return {"m": to_cpu(self.m), "v": to_cpu(self.v), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.t = dict(state["m"]), dict(state["v"]), int(state["t"])


@SERVER_OPTIMIZERS.register("fedadagrad")
class FedAdagrad(FedOpt):
    """FedAdagrad: v_t = v_{t-1} + Δ_t². Keeps β1 momentum (Flower fixes β1 = 0)."""

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        return v + delta * delta


@SERVER_OPTIMIZERS.register("fedadam")
class FedAdam(FedOpt):
    """FedAdam: v_t = β2 v_{t-1} + (1 - β2) Δ_t²."""

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta * delta


@SERVER_OPTIMIZERS.register("fedyogi")
class FedYogi(FedOpt):
    """FedYogi: v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)."""

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        d2 = delta * delta
        return v - (1 - self.beta2) * d2 * torch.sign(v - d2)
