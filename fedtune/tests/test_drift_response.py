"""FlashReset (our drift response) against hand-computed values, and the drift report's
common target and per-group measurement.

One coordinate, β1 0.9, β2 0.99, τ 1e-3, η 0.1, ρ 0.1, warm-up 1: Δ_1 = 0.1 (warm-up,
no detection), then a drift to Δ_2 = 1.0.
"""

from __future__ import annotations

import math

import pytest
import torch

from fedtune.report.drift import common_target, group_drift_metrics, group_key
from fedtune.server import SERVER_OPTIMIZERS, Flash, FlashReset, new_optimizer

B1, B2, TAU, LR = 0.9, 0.99, 1e-3, 0.1


def _reset(**kw) -> FlashReset:
    return FlashReset(**({"lr": LR, "beta1": B1, "beta2": B2, "tau": TAU, "warmup": 1} | kw))


def _steps(opt, deltas: list[list[float]]) -> torch.Tensor:
    params = {"w": torch.zeros(len(deltas[0]), dtype=torch.float64)}
    for delta in deltas:
        params = opt.step(params, {"w": torch.tensor(delta, dtype=torch.float64)})
    return params["w"]


def _reference(seq: list[float], rho: float, warmup: int, shrink: float) -> list[dict[str, float]]:
    """Rules (R1)-(R5) for one coordinate in plain floats (independent of the library)."""
    m = v = d = x = 0.0
    age = 0
    out = []
    for t, g in enumerate(seq, start=1):
        drifted = False
        if t > warmup:  # bias-corrected second moments before and after Δ_t
            v_hat_prev, v_hat = v / (1 - B2 ** (t - 1)), (B2 * v + (1 - B2) * g * g) / (1 - B2**t)
            den3 = abs(g * g - v_hat) + abs(v_hat_prev)
            beta3 = abs(v_hat_prev) / den3 if den3 > 0 else 1.0
            drifted = beta3 < rho and g * g > v_hat_prev
        if drifted:
            m, v, age = 0.0, shrink * v, 0
        if age > 0 or drifted:
            age += 1
        v_prev = v
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        den3 = abs(g * g - v) + abs(v_prev)
        b3 = abs(v_prev) / den3 if den3 > 0 else 1.0
        d = b3 * d + (1 - b3) * (g * g - v)
        m_hat = m / (1 - B1**age) if age > 0 else m
        den = math.sqrt(v) - d + TAU
        if den < TAU:  # Flash's default guard: FedAdam's denominator
            den = math.sqrt(v) + TAU
        x += LR * m_hat / den
        out.append({"m_hat": m_hat, "v": v, "d": d, "x": x, "age": age, "drifted": drifted})
    return out


def test_drift_restarts_the_first_moment_by_hand() -> None:
    opt = _reset()
    _steps(opt, [[0.1]])
    assert float(opt.m["w"][0]) == pytest.approx(0.01) and opt.round_metrics()["reset_coords"] == 0  # warm-up
    x = _steps_from(opt, [0.1], 1.0)
    # round 2: v̂_1 = 1e-4 / 0.01 = 0.01, v̂'_2 = (0.99·1e-4 + 0.01·1) / 0.0199 = 0.5075,
    # β̂3 = 0.01 / (0.4925 + 0.01) ≈ 0.0199 < ρ and 1 > v̂_1: drift
    assert opt.round_metrics()["reset_coords"] == 1 and opt.round_metrics()["reset_frac"] == 1.0
    assert float(opt.age["w"][0]) == 1
    # m_1 is dropped: m_2 = (1 - β1)·1.0 = 0.1; bias-corrected m̂_2 = 0.1 / (1 - 0.9) = 1.0 = Δ_2
    assert float(opt.m["w"][0]) == pytest.approx(0.1)
    assert float(opt.v["w"][0]) == pytest.approx(0.010099)  # s = 1: v_1 kept
    # d_2 = β3·0.0099 + (1 - β3)·(1 - 0.010099) > √v_2: the guard takes FedAdam's √v_2 + τ
    step = LR * 1.0 / (math.sqrt(0.010099) + TAU)
    assert x == pytest.approx(_first_x() + step, rel=1e-9)
    flash = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    x_flash = float(_steps(flash, [[0.1], [1.0]])[0])
    # Flash's numerator is m_2 = 0.9·0.01 + 0.1·1.0 = 0.109 (a tenth of the update plus the old direction)
    assert x - x_flash == pytest.approx(LR * (1.0 - 0.109) / (math.sqrt(0.010099) + TAU), rel=1e-9)


def _first_x() -> float:
    # round 1 (as Flash): m = 0.01, v = 1e-4, d = 0.0099, x = η m / (0.01 - 0.0099 + τ)
    return LR * 0.01 / (0.01 - 0.0099 + TAU)


def _steps_from(opt: FlashReset, prev: list[float], delta: float) -> float:
    params = {"w": torch.tensor([_first_x()], dtype=torch.float64)}
    return float(opt.step(params, {"w": torch.tensor([delta], dtype=torch.float64)})["w"][0])


@pytest.mark.parametrize("shrink", [1.0, 0.5])
def test_matches_plain_float_reference(shrink: float) -> None:
    # drift, stay drifted for a while, then calm: restarts stop and the momentum returns
    seq = [0.1, -0.1, 0.1, 0.12, 1.0, 1.0, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    ref = _reference(seq, rho=0.1, warmup=2, shrink=shrink)
    opt = _reset(warmup=2, v_shrink=shrink)
    params = {"w": torch.zeros(1, dtype=torch.float64)}
    for t, g in enumerate(seq):
        params = opt.step(params, {"w": torch.tensor([g], dtype=torch.float64)})
        assert float(params["w"][0]) == pytest.approx(ref[t]["x"], rel=1e-9), t
        assert float(opt.v["w"][0]) == pytest.approx(ref[t]["v"], rel=1e-9), t
        assert float(opt.age["w"][0]) == ref[t]["age"], t
        assert opt.round_metrics()["reset_coords"] == ref[t]["drifted"], t
    detected = [r["drifted"] for r in ref]
    assert detected[4] and not any(detected[:4]) and not any(detected[7:])  # only around the drift
    assert ref[-1]["age"] > 5  # the coordinate went back to the (corrected) adaptive update


def test_shrink_by_hand() -> None:
    opt = _reset(v_shrink=0.5)
    _steps(opt, [[0.1], [1.0]])
    assert float(opt.v["w"][0]) == pytest.approx(0.99 * 0.5 * 1e-4 + 0.01)


def test_zero_threshold_is_flash() -> None:
    gen = torch.Generator().manual_seed(0)
    flash, reset = Flash(lr=0.05), FlashReset(lr=0.05, reset_threshold=0.0, warmup=1)
    p_flash = p_reset = {"a": torch.zeros(5, 3), "b": torch.zeros(7)}
    for t in range(8):
        scale = 0.01 if t < 4 else 1.0  # a drift at step 5
        delta = {k: torch.randn(v.shape, generator=gen) * scale for k, v in p_flash.items()}
        p_flash, p_reset = flash.step(p_flash, delta), reset.step(p_reset, delta)
        for k in p_flash:
            torch.testing.assert_close(p_reset[k], p_flash[k], rtol=0, atol=0)
        assert reset.round_metrics()["reset_coords"] == 0


def test_warmup_blocks_detection() -> None:
    opt = _reset(warmup=5)
    _steps(opt, [[0.1], [1.0], [10.0]])
    assert opt.round_metrics()["reset_coords"] == 0 and float(opt.age["w"][0]) == 0


def test_shrinking_update_is_not_drift() -> None:
    opt = _reset()
    _steps(opt, [[1.0], [0.001]])  # β3 small but Δ² < v_{t-1}: only growing updates count
    assert opt.round_metrics()["reset_coords"] == 0


def test_state_dict_round_trip_includes_age() -> None:
    a = _reset()
    p = {"w": torch.zeros(2)}
    for delta in ([0.1, 0.1], [1.0, 0.1]):
        p = a.step(p, {"w": torch.tensor(delta)})
    state = a.state_dict()
    assert set(state) == {"m", "v", "t", "d", "age"}
    b = _reset()
    b.load_state_dict(state)
    last = {"w": torch.tensor([0.5, -0.1])}
    torch.testing.assert_close(a.step(p, last)["w"], b.step(p, last)["w"])


def test_registered_and_validated() -> None:
    assert SERVER_OPTIMIZERS.get("flash_reset") is FlashReset
    assert isinstance(new_optimizer("flash_reset", reset_threshold=0.2, v_shrink=0.5), FlashReset)
    for bad in ({"reset_threshold": 1.5}, {"v_shrink": -0.1}, {"warmup": -1}):
        with pytest.raises(ValueError, match="server\\."):
            FlashReset(**bad)


# -- the drift report: one target for every method, incremental drift per client group ----


def test_common_target_is_the_lowest_pre_drift_accuracy_scaled() -> None:
    assert common_target([0.8, 0.7, 0.9]) == pytest.approx(0.665)
    assert common_target([0.8], fraction=0.9) == pytest.approx(0.72)
    with pytest.raises(ValueError, match="no pre-drift"):
        common_target([])


def test_group_drift_metrics_by_hand() -> None:
    # two groups drift at rounds 3 and 5; each is measured on its own accuracy to the end
    g0 = [0.8, 0.8, 0.2, 0.5, 0.7, 0.8]
    g1 = [0.6, 0.6, 0.6, 0.6, 0.1, 0.6]
    metrics = [{"round": r + 1, group_key(0): a, group_key(1): b} for r, (a, b) in enumerate(zip(g0, g1, strict=True))]
    first, second = group_drift_metrics(metrics, [3, 5], target=0.7)
    assert first["group"] == 0 and first["pre_accuracy"] == 0.8 and first["lowest_accuracy"] == 0.2
    assert first["recovery_rounds"] == 2  # round 5: 0.7 ≥ the common target 0.7
    assert first["recovery_rounds_own"] == 3  # round 6: 0.8 ≥ 0.95·0.8
    assert first["auc"] == pytest.approx(((0.2 + 0.5) / 2 + (0.5 + 0.7) / 2 + (0.7 + 0.8) / 2) / 3)
    assert second["group"] == 1 and second["pre_accuracy"] == 0.6
    assert second["recovery_rounds"] is None  # 0.6 never reaches 0.7
    assert second["recovery_rounds_own"] == 1 and second["auc"] == pytest.approx(0.35)
