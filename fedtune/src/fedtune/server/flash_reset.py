"""FlashReset: Flash's drift signal restarts the server momentum where drift is detected.

This repository's own drift response (not from a paper). With a label swap, what slows
every adaptive server optimizer's recovery is the first moment: with β1 = 0.9 the
server keeps stepping along the old concept's direction for ~1/(1 - β1) rounds, while
Flash's drift estimate d only changes the step size, and only in a narrow band of
update sizes (d is in squared units). FlashReset keeps Flash's update (equations
(1)-(5) of :mod:`fedtune.server.flash`) and uses Flash's own per-coordinate drift
signal β3_t to act on the momentum.

Per coordinate, with Δ_t the aggregated update, v'_t = β2 v_{t-1} + (1 - β2) Δ_t², the
bias-corrected second moments v̂_{t-1} = v_{t-1} / (1 - β2^(t-1)), v̂'_t = v'_t / (1 - β2^t),
and Flash's drift decay (3) computed on them,
β̂3_t = |v̂_{t-1}| / (|Δ_t² - v̂'_t| + |v̂_{t-1}|)::

    D_t  = [t > W] · [β̂3_t < ρ] · [Δ_t² > v̂_{t-1}]               drift detected (R1)
    if D_t:  m_{t-1} ← 0,  v_{t-1} ← s · v_{t-1},  k ← 0           restart       (R2)
    k_t  = k_{t-1} + 1 if the coordinate was ever restarted, else 0                (R3)
    m_t, v_t, β3_t, d_t  as Flash's (1)-(4), from the restarted m_{t-1}, v_{t-1}
    m̂_t  = m_t / (1 - β1^k_t)  if k_t > 0,  else m_t                              (R4)
    x_{t+1} = x_t + η m̂_t / (√v_t - d_t + τ)   (Flash's (5) with its guard)       (R5)

- (R1): β̂3_t < ρ means the new squared update exceeds the running second moment by
  more than about (1 - ρ)/ρ times v̂_{t-1} (ρ = 0.1: about 9×, an update ~3× its RMS);
  only growing updates count (Δ_t² > v̂_{t-1}). The bias correction matters: Flash's
  raw v_t is (1 - β2^t) of the mean squared update (a third of it at t = 40 with
  β2 = 0.99), so on raw moments a steady coordinate looks drifted every few rounds.
  Nothing is detected in the first W ≥ 1 steps, where v̂ rests on a few updates.
- (R2)-(R4): the momentum history of a drifted coordinate is dropped and its first
  moment restarts with Adam's bias correction, so the first step after a detection is
  η Δ_t / (√v_t - d_t + τ): the full current update, not (1 - β1) Δ_t plus a stale
  direction. As k grows, 1 - β1^k → 1 and the coordinate returns to Flash's update.
- A coordinate is detected again in every step where its update stays far above v
  (v grows only by (1 - β2) Δ² a step), so while the drift lasts it runs without
  momentum (m̂_t = Δ_t, β1 = 0 in effect); once v has caught up, the restarts stop and
  the momentum builds up again under the bias correction.
- s ∈ [0, 1] optionally shrinks the second moment at the restart (s = 1 keeps it):
  a smaller v_{t-1} means a larger step while the new concept is learnt.

With ρ = 0 nothing is ever detected and FlashReset is Flash (tested). Round metrics
add ``reset_coords`` / ``reset_frac`` (coordinates restarted in the last step).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from fedtune.server.base import SERVER_OPTIMIZERS, State, to_cpu
from fedtune.server.flash import Flash, FlashParams


class FlashResetParams(FlashParams):
    """Hyperparameters of :class:`FlashReset`: Flash's plus the detection threshold ρ,
    the warm-up W and the second-moment shrink s."""

    reset_threshold: float = Field(
        0.1, ge=0, le=1, description="ρ: restart a coordinate's momentum where Flash's β3_t < ρ (0: never)"
    )
    warmup: int = Field(10, ge=1, description="W: no detection in the first W server steps")
    v_shrink: float = Field(1.0, ge=0, le=1, description="s: v_{t-1} is multiplied by s at a restart (1: kept)")


@SERVER_OPTIMIZERS.register("flash_reset")
class FlashReset(Flash):
    """Flash whose first moment restarts (with bias correction) where drift is detected.

    Parameters: :class:`FlashResetParams` (Flash's, plus ``reset_threshold`` 0.1,
    ``warmup`` 10, ``v_shrink`` 1.0), given as an object or by name.
    """

    Params = FlashResetParams
    params: FlashResetParams

    def __init__(self, params: FlashResetParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        p = self.params
        self.rho, self.warmup, self.v_shrink = p.reset_threshold, p.warmup, p.v_shrink
        self.age: State = {}  # k: rounds since the last restart (0: never restarted)
        self._resets = 0
        self._coords = 0

    def detect(self, v_prev: Tensor, delta: Tensor) -> Tensor:
        """(R1): the coordinates where drift is detected this step."""
        if self.t <= self.warmup or self.rho == 0:
            return torch.zeros_like(delta, dtype=torch.bool)
        v_prev_hat = v_prev / (1 - self.beta2 ** (self.t - 1))
        v_hat = self.second_moment(v_prev, delta) / (1 - self.beta2**self.t)
        _, beta3 = self.drift(torch.zeros_like(delta), v_prev_hat, v_hat, delta)
        return (beta3 < self.rho) & (delta * delta > v_prev_hat)

    def moments(self, name: str, delta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Flash's moments after the restart (R2); the numerator is the corrected m̂_t (R4)."""
        v_prev = self.v.get(name, torch.full_like(delta, self.v0)).to(delta.device)
        drifted = self.detect(v_prev, delta)
        age = self.age.get(name, torch.zeros_like(delta)).to(delta.device)
        if bool(drifted.any()):
            m_prev = self.m.get(name, torch.zeros_like(delta)).to(delta.device)
            self.m[name] = torch.where(drifted, torch.zeros_like(m_prev), m_prev)
            self.v[name] = torch.where(drifted, self.v_shrink * v_prev, v_prev)
            age = torch.where(drifted, torch.zeros_like(age), age)
        age = torch.where((age > 0) | drifted, age + 1, age)  # (R3)
        self.age[name] = age
        self._resets += int(drifted.sum())
        self._coords += delta.numel()
        m, v, d, beta3 = super().moments(name, delta)
        correction = torch.where(age > 0, 1 / (1 - self.beta1**age), torch.ones_like(age))  # (R4)
        return m * correction, v, d, beta3

    def step(self, params: State, delta: State) -> State:
        self._resets = self._coords = 0
        out = super().step(params, delta)
        if self._coords:
            self._metrics |= {"reset_coords": float(self._resets), "reset_frac": self._resets / self._coords}
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "age": to_cpu(self.age)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.age = dict(state["age"])
