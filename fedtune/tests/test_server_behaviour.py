"""Server optimizers: the branches and diagnostics the golden tests do not reach.

Flash's fallback for a coordinate whose step would overflow, its per-round counters
summed over several tensors, the effective-learning-rate quantiles, FedYogi where
v = Δ², and the hyperparameters given as an object or by name. Found by mutation
testing (``make mutate``): each test fails on a small plausible bug that every other
test let through.
"""

from __future__ import annotations

import math

import pytest
import torch

from fedtune.errors import ConfigError
from fedtune.server import FedAdam, FedAvgOptimizer, FedYogi, Flash, new_optimizer
from fedtune.server.base import FedAvgParams
from fedtune.server.fedopt import FedOptParams, lr_summary
from fedtune.server.flash import FlashParams

TAU = 1e-3


def _flash_first_step(delta: float, beta1: float = 0.9, beta2: float = 0.99):
    """m, v, d, β3 of a coordinate's first step (m = v = d = 0 before), in float64 Python."""
    m = (1 - beta1) * delta
    v = (1 - beta2) * delta ** 2
    gap = delta ** 2 - v
    beta3 = 0.0 if gap else 1.0  # |v_0| / (|gap| + |v_0|) with v_0 = 0
    return m, v, (1 - beta3) * gap, beta3


def test_flash_falls_back_to_fedadam_where_its_step_overflows():
    # Δ = 0.1: denominators √v − d + τ = 0.0011 (Flash) and √v + τ = 0.011 (FedAdam); with
    # η = 100 Flash moves a coordinate by 909 and FedAdam by 90.9. In float16 65,000 + 909
    # overflows, so that coordinate (only that one) takes FedAdam's step.
    g = float(torch.tensor(0.1, dtype=torch.float16))  # the update as float16 holds it
    m, v, d, _ = _flash_first_step(g)
    flash_den, adam_den = math.sqrt(v) - d + TAU, math.sqrt(v) + TAU
    opt = Flash(lr=100.0, tau=TAU)
    x = torch.tensor([65000.0, 0.0], dtype=torch.float16)
    out = opt.step({"w": x}, {"w": torch.tensor([0.1, 0.1], dtype=torch.float16)})["w"]
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
    expected = torch.tensor([65000.0 + 100 * m / adam_den, 100 * m / flash_den]).to(torch.float16)
    assert torch.equal(out, expected)
    metrics = opt.round_metrics()
    assert metrics["flash_nonfinite"] == 1.0 and metrics["flash_guarded"] == 0.0
    two = Flash(lr=100.0, tau=TAU)
    big = torch.tensor([65000.0], dtype=torch.float16)
    two.step({"u": big, "w": x}, {"u": torch.tensor([0.1], dtype=torch.float16),
                                  "w": torch.tensor([0.1, 0.1], dtype=torch.float16)})
    assert two.round_metrics()["flash_nonfinite"] == 2.0  # one in each tensor
    # the effective lr of the fallen-back coordinate is FedAdam's
    assert metrics["eff_lr_max"] == pytest.approx(100 / flash_den, rel=1e-3)
    assert min(metrics["eff_lr_q05"], metrics["eff_lr_mean"]) < 100 / flash_den
    assert metrics["eff_lr_mean"] == pytest.approx((100 / adam_den + 100 / flash_den) / 2, rel=1e-3)


def test_flash_counters_add_up_over_tensors_and_rounds():
    # Δ = 1 is guarded on a first step (d = 0.99 > √v = 0.1); Δ = 0.01 is not
    opt = Flash(lr=0.1, tau=TAU)
    params = {"a": torch.zeros(1), "b": torch.zeros(2)}
    delta = {"a": torch.tensor([1.0]), "b": torch.tensor([1.0, 0.01])}
    opt.step(params, delta)
    metrics = opt.round_metrics()
    assert metrics["flash_guarded"] == 2.0 and metrics["flash_guarded_frac"] == pytest.approx(2 / 3)
    assert metrics["flash_nonfinite"] == 0.0
    ds = [_flash_first_step(g)[2] for g in (1.0, 1.0, 0.01)]
    assert metrics["flash_d_mean"] == pytest.approx(sum(ds) / 3)
    assert metrics["flash_beta3_mean"] == 0.0
    assert opt.t == 1
    opt.step(params, delta)
    opt.step(params, delta)
    assert opt.t == 3 and opt.state_dict()["t"] == 3
    # a repeated Δ: β3_t = v_{t-1} / (|Δ² − v_t| + v_{t-1}), the same for every nonzero Δ;
    # at t = 3, v_2 = 0.0199 Δ², v_3 = 0.029701 Δ²
    v2, v3 = 0.0199, 0.99 * 0.0199 + 0.01
    assert opt.round_metrics()["flash_beta3_mean"] == pytest.approx(v2 / ((1 - v3) + v2))
    beta3 = [float(opt.drift(opt.d[k], opt.v[k], opt.v[k], g)[1].mean()) for k, g in delta.items()]
    assert all(0 <= b <= 1 for b in beta3)


def test_lr_summary_quantiles_and_mean():
    dens = [torch.tensor([1.0, 2.0, 4.0]), torch.tensor([8.0, 16.0])]
    eff = torch.tensor([0.5 / x for x in (1.0, 2.0, 4.0, 8.0, 16.0)], dtype=torch.float64)
    summary = lr_summary(0.5, dens)
    q = torch.quantile(eff, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    assert summary == pytest.approx({"eff_lr_mean": float(eff.mean()), "eff_lr_q05": float(q[0]),
                                     "eff_lr_q50": float(q[1]), "eff_lr_q95": float(q[2]),
                                     "eff_lr_max": 0.5})
    assert summary["eff_lr_q50"] == 0.125 and lr_summary(1.0, []) == {}


def test_lr_summary_samples_a_large_tensor_with_a_stride():
    n = 3 * (1 << 20)  # beyond the 2^20 coordinates of the quantiles: every 3rd is used
    den = torch.arange(1, n + 1, dtype=torch.float32)
    summary = lr_summary(1.0, [den])
    sample = (1.0 / den.to(torch.float64))[::3]
    assert summary["eff_lr_q50"] == pytest.approx(float(torch.quantile(sample, 0.5)))
    assert summary["eff_lr_max"] == 1.0


def test_fedopt_has_no_metrics_before_a_step_and_accepts_beta1_zero():
    assert FedAdam().round_metrics() == {}
    opt = FedAdam(lr=0.1, beta1=0.0, tau=TAU)  # no momentum: a valid and studied setting
    out = opt.step({"w": torch.zeros(1)}, {"w": torch.tensor([0.1])})
    assert float(out["w"][0]) == pytest.approx(0.1 * 0.1 / (math.sqrt(0.01 * 0.01) + TAU))
    with pytest.raises(ConfigError, match=r"^server\.beta2: must lie in \[0, 1\), got 1\.0"):
        FedAdam(beta2=1.0)
    with pytest.raises(ConfigError, match=r"^server\.lr: must be positive"):
        FedYogi(lr=0.0)


def test_fedyogi_where_v_equals_delta_squared():
    # sign(v − Δ²) = 0 (here both 0): v stays, and nothing moves
    opt = FedYogi(lr=0.1, tau=TAU)
    out = opt.step({"w": torch.ones(2)}, {"w": torch.zeros(2)})
    assert torch.equal(out["w"], torch.ones(2)) and torch.equal(opt.v["w"], torch.zeros(2))


def test_hyperparameters_as_an_object_or_by_name():
    params = FedOptParams(lr=0.03, beta1=0.5)
    assert FedYogi(params).params is params
    merged = FedYogi(params, tau=0.01).params
    assert (merged.lr, merged.beta1, merged.tau) == (0.03, 0.5, 0.01)
    assert Flash(lr=0.2).params.lr == 0.2 and Flash(lr=0.2).lr == 0.2
    assert Flash(FlashParams(lr=0.2, guard=False)).params.guard == "off"  # the old switch still reads
    assert Flash(FlashParams(lr=0.2)).lr == 0.2
    assert FedAvgOptimizer(lr=0.5).lr == 0.5 and FedAvgOptimizer(FedAvgParams(lr=0.5)).lr == 0.5
    assert new_optimizer("fedavg").lr == 1.0
    with pytest.raises(ConfigError, match=r"^server\.lr"):
        FedAvgOptimizer(lr=-1.0)
    with pytest.raises(ConfigError, match=r"^server\.momentum: unknown key; it takes: lr, beta1, beta2, tau, "):
        FedAdam(momentum=0.9)
