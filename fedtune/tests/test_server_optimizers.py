"""Golden tests of FedAvg, FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021, Algorithm 2).

The expected values are worked out by hand for one coordinate and Δ = 0.1, 0.1, 0.01
(β1 0.9, β2 0.99, τ 1e-3, η 0.1, m_0 = v_0 = 0, no bias correction unless stated).
"""

from __future__ import annotations

import math

import pytest
import torch

from fedtune.server import FedAdagrad, FedAdam, FedAvgOptimizer, FedYogi, new_optimizer

B1, B2, TAU, LR = 0.9, 0.99, 1e-3, 0.1
DELTAS = [0.1, 0.1, 0.01]
M = [0.01, 0.019, 0.9 * 0.019 + 0.001]  # m_t = 0.9 m_{t-1} + 0.1 Δ_t


def _run(opt, deltas=DELTAS) -> list[float]:
    params = {"w": torch.zeros(1, dtype=torch.float64)}
    xs = []
    for g in deltas:
        params = opt.step(params, {"w": torch.tensor([g], dtype=torch.float64)})
        xs.append(float(params["w"][0]))
    return xs


def _x(v: list[float], lr: list[float] | None = None) -> list[float]:
    lr = lr or [LR] * 3
    out, x = [], 0.0
    for t in range(3):
        x += lr[t] * M[t] / (math.sqrt(v[t]) + TAU)
        out.append(x)
    return out


def test_fedavg_adds_the_update() -> None:
    assert _run(FedAvgOptimizer()) == pytest.approx([0.1, 0.2, 0.21])
    assert _run(FedAvgOptimizer(lr=0.5)) == pytest.approx([0.05, 0.1, 0.105])


def test_fedadam() -> None:
    # v_t = 0.99 v_{t-1} + 0.01 Δ²: 1e-4, 1.99e-4, 0.99·1.99e-4 + 1e-6
    v = [1e-4, 1.99e-4, 1.9701e-4 + 1e-6]
    opt = FedAdam(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    xs = _run(opt)
    assert float(opt.m["w"][0]) == pytest.approx(M[2])
    assert float(opt.v["w"][0]) == pytest.approx(v[2])
    assert xs == pytest.approx(_x(v), rel=1e-9)
    assert xs[0] == pytest.approx(0.1 * 0.01 / 0.011)


def test_fedyogi() -> None:
    # v_t = v_{t-1} - 0.01 Δ² sign(v_{t-1} - Δ²): 0 + 1e-4; 1e-4 + 1e-4 (v < Δ²); 2e-4 - 1e-6 (v > Δ²)
    v = [1e-4, 2e-4, 2e-4 - 1e-6]
    opt = FedYogi(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    xs = _run(opt)
    assert float(opt.v["w"][0]) == pytest.approx(v[2])
    assert xs == pytest.approx(_x(v), rel=1e-9)


def test_fedadagrad() -> None:
    # v_t = v_{t-1} + Δ²: 0.01, 0.02, 0.0201
    v = [0.01, 0.02, 0.0201]
    opt = FedAdagrad(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    xs = _run(opt)
    assert float(opt.v["w"][0]) == pytest.approx(v[2])
    assert xs == pytest.approx(_x(v), rel=1e-9)


def test_fedadam_bias_correction_follows_flower() -> None:
    # η_t = η √(1 - β2^(t+1)) / (1 - β1^(t+1)) with t = 1, 2, 3 (Flower's FedAdam)
    lr = [LR * math.sqrt(1 - B2 ** (t + 1)) / (1 - B1 ** (t + 1)) for t in (1, 2, 3)]
    assert lr[0] == pytest.approx(0.1 * math.sqrt(0.0199) / 0.19)
    v = [1e-4, 1.99e-4, 1.9701e-4 + 1e-6]
    xs = _run(FedAdam(lr=LR, beta1=B1, beta2=B2, tau=TAU, bias_correction=True))
    assert xs == pytest.approx(_x(v, lr), rel=1e-9)


def test_fedopt_effective_lr_metrics() -> None:
    opt = new_optimizer("fedadam", lr=LR)
    opt.step({"w": torch.zeros(2)}, {"w": torch.tensor([0.1, 0.0])})
    metrics = opt.round_metrics()
    assert metrics["eff_lr_max"] == pytest.approx(LR / TAU)
    assert metrics["eff_lr_mean"] == pytest.approx((LR / 0.011 + LR / TAU) / 2, rel=1e-5)


def test_state_round_trip_and_partial_updates() -> None:
    a = FedYogi(lr=LR)
    p = {"a": torch.zeros(2), "b": torch.zeros(2)}
    p = {**p, **a.step(p, {"a": torch.ones(2) * 0.1})}  # round updates only "a" (Spry)
    assert set(a.m) == {"a"}
    b = FedYogi(lr=LR)
    b.load_state_dict(a.state_dict())
    delta = {"a": torch.ones(2) * 0.2, "b": torch.ones(2)}
    out_a, out_b = a.step(p, delta), b.step(p, delta)
    for k in delta:
        torch.testing.assert_close(out_a[k], out_b[k])


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"tau": -1.0}, {"beta1": 1.0}, {"beta2": -0.1}])
def test_invalid_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        FedAdam(**bad)
