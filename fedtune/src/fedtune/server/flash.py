"""Flash's drift-aware server optimizer.

Panchal, Choudhary, Mitra, Mukherjee, Sarkar, Mitra, Ghosh. "Flash: Concept Drift
Adaptation in Federated Learning". ICML 2023, PMLR 202.
https://proceedings.mlr.press/v202/panchal23a.html

Per coordinate, with Δ_t the aggregated pseudo-gradient (mean client update)::

    m_t     = β1 m_{t-1} + (1 - β1) Δ_t                          (1)  first moment
    v_t     = β2 v_{t-1} + (1 - β2) Δ_t²                         (2)  second moment
    β3_t    = |v_{t-1}| / (|Δ_t² - v_t| + |v_{t-1}|)             (3)  drift decay
    d_t     = β3_t d_{t-1} + (1 - β3_t) (Δ_t² - v_t)             (4)  drift estimate
    x_{t+1} = x_t + η m_t / (√v_t - d_t + τ)                     (5)

with m_0 = v_0 = d_0 = 0 and no bias correction, so with d ≡ 0 it is FedAdam. A
coordinate whose update grows far above its running second moment (concept drift)
gets d_t > 0 and so a larger effective learning rate η / (√v_t - d_t + τ).

Hazards and how they are handled here:

- (3) is 0/0 where v_{t-1} and the gap Δ_t² - v_t are both zero: β3 := 1 there
  (no evidence of drift, d keeps its value).
- d is in squared units, so after a large drift √v_t - d_t + τ can reach zero or go
  negative (an exploding or reversed step). With ``guard=True`` every coordinate where
  √v_t - d_t + τ < τ (that is d_t > √v_t) takes FedAdam's step (denominator √v_t + τ)
  instead; the number of such coordinates is reported each round (``flash_guarded``).
- Δ² of float32 values can overflow float32, so the state is kept in float64. If a
  step would still put a non-finite value into the model (only possible with
  ``guard=False``), that coordinate takes FedAdam's step (``flash_nonfinite``).
  A non-finite Δ is refused with a one-line error.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from fedtune.server.base import SERVER_OPTIMIZERS, Positive, State, to_cpu
from fedtune.server.fedopt import FedAdam, FedOptParams, lr_summary

_STATE_DTYPE = torch.float64


class FlashParams(FedOptParams):
    """Hyperparameters of :class:`Flash`: FedAdam's, without bias correction, plus the guard."""

    tau: Positive = Field(1e-3, description="adaptivity τ added to the denominator √v_t - d_t")
    bias_correction: Literal[False] = Field(False, description="always off: Flash's update (5) has no bias correction")
    guard: bool = Field(
        True,
        description="where √v_t - d_t + τ < τ, take FedAdam's denominator √v_t + τ (counted in flash_guarded); "
        "false applies (5) as written, which can reverse a coordinate's step",
    )


@SERVER_OPTIMIZERS.register("flash")
class Flash(FedAdam):
    """Flash: FedAdam plus a per-coordinate drift estimate d that raises the step size.

    Parameters: :class:`FlashParams` (``lr`` 1e-2, ``beta1`` 0.9, ``beta2`` 0.99,
    ``tau`` 1e-3, ``guard`` True), given as an object or by name.

    ``round_metrics()`` gives ``eff_lr_*`` of η / (denominator used), ``flash_guarded``
    (coordinates the guard caught), ``flash_nonfinite``, mean d and mean β3 of the last step.
    """

    Params = FlashParams
    params: FlashParams

    def __init__(self, params: FlashParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self.guard = self.params.guard
        self.d: State = {}

    def drift(self, d: Tensor, v_prev: Tensor, v: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """Equations (3) and (4): (d_t, β3_t) from d_{t-1}, v_{t-1}, v_t and Δ_t."""
        gap = delta * delta - v
        num = v_prev.abs()
        den = gap.abs() + num
        beta3 = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(den))
        return beta3 * d + (1 - beta3) * gap, beta3

    def step(self, params: State, delta: State) -> State:
        self.t += 1
        out: State = {}
        denominators: list[Tensor] = []
        guarded = nonfinite = coords = 0
        d_sum = beta3_sum = 0.0
        for k, g in delta.items():
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError(f"Flash: the aggregated update of {k!r} has NaN or inf values")
            g = g.detach().to(_STATE_DTYPE)
            zeros = torch.zeros_like(g)
            # .to(): state loaded from a CPU checkpoint follows the update's device
            m_prev, v_prev, d_prev = (s.get(k, zeros).to(g.device) for s in (self.m, self.v, self.d))
            m = self.beta1 * m_prev + (1 - self.beta1) * g  # (1)
            v = self.second_moment(v_prev, g)  # (2), FedAdam's
            d, beta3 = self.drift(d_prev, v_prev, v, g)  # (3), (4)
            self.m[k], self.v[k], self.d[k] = m, v, d

            adam_denominator = v.sqrt() + self.tau
            denominator = v.sqrt() - d + self.tau  # (5)
            if self.guard:
                caught = denominator < self.tau
                guarded += int(caught.sum())
                denominator = torch.where(caught, adam_denominator, denominator)
            x = params[k]
            new = (x.to(_STATE_DTYPE) + self.lr * m / denominator).to(x.dtype)
            bad = ~torch.isfinite(new)
            if bool(bad.any()):
                nonfinite += int(bad.sum())
                fallback = (x.to(_STATE_DTYPE) + self.lr * m / adam_denominator).to(x.dtype)
                new = torch.where(bad, fallback, new)
                denominator = torch.where(bad, adam_denominator, denominator)
            out[k] = new
            denominators.append(denominator)
            coords += g.numel()
            d_sum += float(d.sum())
            beta3_sum += float(beta3.sum())

        self._metrics = lr_summary(self.lr, denominators)
        if coords:
            self._metrics |= {
                "flash_guarded": float(guarded),
                "flash_guarded_frac": guarded / coords,
                "flash_nonfinite": float(nonfinite),
                "flash_d_mean": d_sum / coords,
                "flash_beta3_mean": beta3_sum / coords,
            }
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "d": to_cpu(self.d)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.d = dict(state["d"])
