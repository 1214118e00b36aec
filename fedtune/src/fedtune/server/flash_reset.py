"""FlashReset: where Flash's drift signal fires, a few FedAvg steps and fresh moments.

This repository's own drift response (not from a paper). After a label swap the
adaptive server optimizers (FedAdam, Flash) recover more slowly than FedAvg with server
lr 1 in every measurement this repository has made: their step η m_t / (√v_t + τ) is
sized by the old concept's moments (m keeps stepping along the old direction for
~1/(1 - β1) rounds; v, built from the old concept's small updates, sizes the new large
ones arbitrarily), while FedAvg applies the clients' mean update as it is. FlashReset
keeps Flash's update (equations (1)-(5) of :mod:`fedtune.server.flash`) where nothing
has drifted, and where Flash's own per-coordinate drift signal fires it takes FedAvg's
step for H rounds and restarts that coordinate's moments, so that the adaptive update
it returns to is built from the new concept's updates only. It acts whatever β1 is.

Per coordinate, with Δ_t the aggregated update, v'_t = β2 v_{t-1} + (1 - β2) Δ_t², the
bias-corrected second moments v̂_{t-1} = v_{t-1} / (1 - β2^(t-1)), v̂'_t = v'_t / (1 - β2^t),
and Flash's drift decay (3) computed on them,
β̂3_t = |v̂_{t-1}| / (|Δ_t² - v̂'_t| + |v̂_{t-1}|)::

    D_t     = [t > W] · [β̂3_t < ρ] · [Δ_t² > v̂_{t-1}]                    drift detected (R1)
    if D_t:   m_{t-1} ← 0,  v_{t-1} ← s · v_{t-1},  h_{t-1} ← H          reset, hold     (R2)
    m_t, v_t, β3_t, d_t  as Flash's (1)-(4), from m_{t-1}, v_{t-1}                       (R3)
    x_{t+1} = x_t + η_avg Δ_t                      if h_{t-1} > 0        FedAvg step     (R4)
    x_{t+1} = x_t + η m_t / (√v_t - d_t + τ)       otherwise             Flash's (5)
    h_t     = max(h_{t-1} - 1, 0)                                        hold count      (R5)

with h_0 = 0 (state ``hold``: FedAvg rounds left).

- (R1): β̂3_t < ρ means the new squared update exceeds the running second moment by
  more than about (1 - ρ)/ρ times v̂_{t-1} (ρ = 0.1: about 9×, an update ~3× its RMS);
  only growing updates count (Δ_t² > v̂_{t-1}). The bias correction matters: Flash's
  raw v_t is (1 - β2^t) of the mean squared update (a third of it at t = 40 with
  β2 = 0.99), so on raw moments a steady coordinate looks drifted every few rounds.
  Nothing is detected in the first W ≥ 1 steps, where v̂ rests on a few updates.
- (R2), (R4): a detection at step t gives the coordinate FedAvg's step η_avg Δ_t (the
  clients' mean update; η_avg = 1 is plain FedAvg) in steps t, ..., t + H - 1; a new
  detection meanwhile restarts the count, so a coordinate whose update stays far above
  v̂ stays on FedAvg's step. With H = 0 there is no hold and FlashReset only resets the
  moments.
- (R2), (R3): the first moment restarts from 0 (the old direction is dropped); the
  second moment is multiplied by s ∈ [0, 1] (s = 1 keeps it; a smaller s forgets the
  old concept's update sizes). Both keep following (1)-(2) during the hold, so when the
  hold ends the adaptive step resumes from moments that saw H updates of the new concept
  (m_t ≈ (1 - β1^H) times their mean: a soft return).

With ρ = 0 nothing is ever detected and FlashReset is Flash (tested). Round metrics
add ``reset_coords`` / ``reset_frac`` (coordinates detected in the last step) and
``hold_frac`` (coordinates that took FedAvg's step in it).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from fedtune.server.base import SERVER_OPTIMIZERS, Positive, State, to_cpu
from fedtune.server.flash import Flash, FlashParams


class FlashResetParams(FlashParams):
    """Hyperparameters of :class:`FlashReset`: Flash's plus the detection threshold ρ,
    the warm-up W, the hold H, FedAvg's step size η_avg and the second-moment shrink s."""

    reset_threshold: float = Field(
        0.1, ge=0, le=1, description="ρ: a coordinate has drifted where the bias-corrected β3_t < ρ (0: never)"
    )
    warmup: int = Field(10, ge=1, description="W: no detection in the first W server steps")
    hold: int = Field(10, ge=0, description="H: server steps a drifted coordinate takes FedAvg's step (0: none)")
    fedavg_lr: Positive = Field(1.0, description="η_avg: the FedAvg step during a hold is η_avg times the mean update")
    v_shrink: float = Field(1.0, ge=0, le=1, description="s: v_{t-1} is multiplied by s at a detection (1: kept)")


@SERVER_OPTIMIZERS.register("flash_reset")
class FlashReset(Flash):
    """Flash that takes FedAvg's step, with fresh moments, where drift is detected.

    Parameters: :class:`FlashResetParams` (Flash's, plus ``reset_threshold`` 0.1,
    ``warmup`` 10, ``hold`` 10, ``fedavg_lr`` 1.0, ``v_shrink`` 1.0), given as an object
    or by name. ρ 0.1 and H 10 are what ``benchmarks/flash_drift.py`` tuned on MNIST-1D
    (H 10 on all three drift kinds, ρ 0.1 on two).
    """

    Params = FlashResetParams
    params: FlashResetParams

    def __init__(self, params: FlashResetParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        p = self.params
        self.rho, self.warmup, self.v_shrink = p.reset_threshold, p.warmup, p.v_shrink
        self.hold_rounds, self.fedavg_lr = p.hold, p.fedavg_lr
        self.hold: State = {}  # h: FedAvg steps left per coordinate
        self._resets = self._held = self._coords = 0

    def detect(self, v_prev: Tensor, delta: Tensor) -> Tensor:
        """(R1): the coordinates where drift is detected this step."""
        if self.t <= self.warmup or self.rho == 0:
            return torch.zeros_like(delta, dtype=torch.bool)
        v_prev_hat = v_prev / (1 - self.beta2 ** (self.t - 1))
        v_hat = self.second_moment(v_prev, delta) / (1 - self.beta2**self.t)
        _, beta3 = self.drift(torch.zeros_like(delta), v_prev_hat, v_hat, delta)
        return (beta3 < self.rho) & (delta * delta > v_prev_hat)

    def direction(self, name: str, delta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Flash's step after the reset (R2); FedAvg's step η_avg Δ_t on held coordinates (R4)."""
        v_prev = self.v.get(name, torch.full_like(delta, self.v0)).to(delta.device)
        drifted = self.detect(v_prev, delta)
        hold = self.hold.get(name, torch.zeros_like(delta)).to(delta.device)
        if bool(drifted.any()):
            m_prev = self.m.get(name, torch.zeros_like(delta)).to(delta.device)
            self.m[name] = torch.where(drifted, torch.zeros_like(m_prev), m_prev)
            self.v[name] = torch.where(drifted, self.v_shrink * v_prev, v_prev)
            hold = torch.where(drifted, torch.full_like(hold, self.hold_rounds), hold)
        held = hold > 0
        self.hold[name] = (hold - 1).clamp(min=0)  # (R5)
        numerator, denominator, caught, v, d, beta3 = super().direction(name, delta)  # (R3), Flash's (5)
        # η · Δ / (η / η_avg) = η_avg Δ: FedAvg's step, reported as the effective lr η_avg
        numerator = torch.where(held, delta, numerator)
        denominator = torch.where(held, torch.full_like(denominator, self.lr / self.fedavg_lr), denominator)
        self._resets += int(drifted.sum())
        self._held += int(held.sum())
        self._coords += delta.numel()
        return numerator, denominator, caught & ~held, v, d, beta3

    def step(self, params: State, delta: State) -> State:
        self._resets = self._held = self._coords = 0
        out = super().step(params, delta)
        if self._coords:
            self._metrics |= {
                "reset_coords": float(self._resets),
                "reset_frac": self._resets / self._coords,
                "hold_frac": self._held / self._coords,
            }
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "hold": to_cpu(self.hold)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.hold = dict(state["hold"])
