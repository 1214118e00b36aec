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

B1, B2, TAU, LR, RHO = 0.9, 0.99, 1e-3, 0.1, 0.1


def _reset(**kw) -> FlashReset:
    return FlashReset(**({"lr": LR, "beta1": B1, "beta2": B2, "tau": TAU, "warmup": 1, "reset_threshold": RHO} | kw))


def _steps(opt, deltas: list[list[float]]) -> torch.Tensor:
    params = {"w": torch.zeros(len(deltas[0]), dtype=torch.float64)}
    for delta in deltas:
        params = opt.step(params, {"w": torch.tensor(delta, dtype=torch.float64)})
    return params["w"]


def _reference(seq: list[float], warmup: int, hold: int, shrink: float, fedavg_lr: float, beta1: float = B1) -> list[dict]:
    """Rules (R1)-(R5) for one coordinate in plain floats (independent of the library)."""
    m = v = d = x = 0.0
    h = 0
    out = []
    for t, g in enumerate(seq, start=1):
        drifted = False
        if t > warmup:  # bias-corrected second moments before and after Δ_t
            v_hat_prev, v_hat = v / (1 - B2 ** (t - 1)), (B2 * v + (1 - B2) * g * g) / (1 - B2**t)
            den3 = abs(g * g - v_hat) + abs(v_hat_prev)
            beta3 = abs(v_hat_prev) / den3 if den3 > 0 else 1.0
            drifted = beta3 < RHO and g * g > v_hat_prev
        if drifted:  # (R2)
            m, v, h = 0.0, shrink * v, hold
        held = h > 0
        h = max(h - 1, 0)  # (R5)
        v_prev = v
        m = beta1 * m + (1 - beta1) * g
        v = B2 * v + (1 - B2) * g * g
        den3 = abs(g * g - v) + abs(v_prev)
        b3 = abs(v_prev) / den3 if den3 > 0 else 1.0
        d = b3 * d + (1 - b3) * (g * g - v)
        if held:  # (R4): FedAvg's step
            x += fedavg_lr * g
        else:
            den = math.sqrt(v) - d + TAU
            if den < TAU:  # Flash's default guard: FedAdam's denominator
                den = math.sqrt(v) + TAU
            x += LR * m / den
        out.append({"m": m, "v": v, "d": d, "x": x, "hold": h, "held": held, "drifted": drifted})
    return out


def _first_x() -> float:
    # round 1 (as Flash): m = 0.01, v = 1e-4, d = 0.0099, x = η m / (0.01 - 0.0099 + τ)
    return LR * 0.01 / (0.01 - 0.0099 + TAU)


def test_drift_takes_fedavg_steps_with_fresh_momentum_by_hand() -> None:
    opt = _reset(hold=1, fedavg_lr=0.5)
    x1 = float(_steps(opt, [[0.1]])[0])
    assert x1 == pytest.approx(_first_x(), rel=1e-12) and opt.round_metrics()["reset_coords"] == 0  # warm-up
    params = {"w": torch.tensor([x1], dtype=torch.float64)}
    params = opt.step(params, {"w": torch.tensor([1.0], dtype=torch.float64)})
    # round 2: v̂_1 = 1e-4 / 0.01 = 0.01, v̂'_2 = (0.99·1e-4 + 0.01·1) / 0.0199 = 0.5075,
    # β̂3 = 0.01 / (0.4925 + 0.01) ≈ 0.0199 < ρ and 1 > v̂_1: drift
    metrics = opt.round_metrics()
    assert metrics["reset_coords"] == 1 and metrics["reset_frac"] == 1.0 and metrics["hold_frac"] == 1.0
    # FedAvg's step η_avg Δ_2 = 0.5, reported as the effective lr η_avg
    assert float(params["w"][0]) == pytest.approx(x1 + 0.5, rel=1e-12)
    assert metrics["eff_lr_mean"] == pytest.approx(0.5)
    # m_1 is dropped: m_2 = (1 - β1)·1.0 = 0.1 (Flash's would be 0.9·0.01 + 0.1 = 0.109); v_1 kept (s = 1)
    assert float(opt.m["w"][0]) == pytest.approx(0.1)
    assert float(opt.v["w"][0]) == pytest.approx(0.99 * 1e-4 + 0.01)
    assert float(opt.hold["w"][0]) == 0
    # round 3, Δ = 1: β̂3 = 0.5075 / (|1 - 0.6733| + 0.5075) ≈ 0.61, no detection; the hold (H = 1)
    # is over, so Flash's step (5) from the fresh moments: m_3 = 0.9·0.1 + 0.1·1 = 0.19
    x2 = float(params["w"][0])
    params = opt.step(params, {"w": torch.tensor([1.0], dtype=torch.float64)})
    assert opt.round_metrics()["reset_coords"] == 0 and opt.round_metrics()["hold_frac"] == 0
    v2, v3 = 0.010099, 0.99 * 0.010099 + 0.01
    assert float(opt.m["w"][0]) == pytest.approx(0.19)
    assert float(opt.v["w"][0]) == pytest.approx(v3)
    d = float(opt.d["w"][0])
    den = math.sqrt(v3) - d + TAU
    den = den if den >= TAU else math.sqrt(v3) + TAU
    assert float(params["w"][0]) == pytest.approx(x2 + LR * 0.19 / den, rel=1e-9)
    assert v2 < v3


@pytest.mark.parametrize(("hold", "shrink", "beta1"), [(3, 1.0, B1), (3, 0.5, B1), (0, 1.0, B1), (2, 1.0, 0.0)])
def test_matches_plain_float_reference(hold: int, shrink: float, beta1: float) -> None:
    # drift, stay drifted for a while, then calm: detections stop and Flash's step returns
    seq = [0.1, -0.1, 0.1, 0.12, 1.0, 1.0, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    ref = _reference(seq, warmup=2, hold=hold, shrink=shrink, fedavg_lr=0.7, beta1=beta1)
    opt = _reset(warmup=2, hold=hold, v_shrink=shrink, fedavg_lr=0.7, beta1=beta1)
    params = {"w": torch.zeros(1, dtype=torch.float64)}
    for t, g in enumerate(seq):
        params = opt.step(params, {"w": torch.tensor([g], dtype=torch.float64)})
        assert float(params["w"][0]) == pytest.approx(ref[t]["x"], rel=1e-9), t
        assert float(opt.m["w"][0]) == pytest.approx(ref[t]["m"], rel=1e-9), t
        assert float(opt.v["w"][0]) == pytest.approx(ref[t]["v"], rel=1e-9), t
        assert float(opt.hold["w"][0]) == ref[t]["hold"], t
        assert opt.round_metrics()["reset_coords"] == ref[t]["drifted"], t
        assert opt.round_metrics()["hold_frac"] == ref[t]["held"], t
    detected = [r["drifted"] for r in ref]
    assert detected[4] and not any(detected[:4]) and not any(detected[7:])  # only around the drift
    held = [r["held"] for r in ref]
    assert sum(held) >= hold and not any(held[:4]) and not any(held[10:])  # back to Flash's step


def test_acts_without_momentum() -> None:
    # β1 = 0: resetting m changes nothing, the FedAvg step does; coordinates without drift keep Flash's step
    seq = [[0.1, 0.1], [-0.1, 0.1], [0.1, -0.1], [2.0, 0.1]]
    flash = _steps(Flash(lr=LR, beta1=0.0, beta2=B2, tau=TAU), seq)
    opt = _reset(beta1=0.0, warmup=2, hold=2)
    x = _steps(opt, seq)
    assert opt.round_metrics()["reset_coords"] == 1 and opt.round_metrics()["hold_frac"] == 0.5
    assert float(x[1]) == pytest.approx(float(flash[1]), rel=1e-12)
    before = float(_steps(_reset(beta1=0.0, warmup=2, hold=2), seq[:3])[0])
    assert float(x[0]) == pytest.approx(before + 2.0, rel=1e-12)  # η_avg = 1: the mean update itself
    assert float(x[0]) != pytest.approx(float(flash[0]), rel=1e-3)


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
        assert reset.round_metrics()["reset_coords"] == 0 and reset.round_metrics()["hold_frac"] == 0


def test_warmup_blocks_detection() -> None:
    opt = _reset(warmup=5)
    _steps(opt, [[0.1], [1.0], [10.0]])
    assert opt.round_metrics()["reset_coords"] == 0 and float(opt.hold["w"][0]) == 0


def test_shrinking_update_is_not_drift() -> None:
    opt = _reset()
    _steps(opt, [[1.0], [0.001]])  # β3 small but Δ² < v_{t-1}: only growing updates count
    assert opt.round_metrics()["reset_coords"] == 0


def test_state_dict_round_trip_includes_hold() -> None:
    a = _reset()
    p = {"w": torch.zeros(2)}
    for delta in ([0.1, 0.1], [1.0, 0.1]):
        p = a.step(p, {"w": torch.tensor(delta)})
    state = a.state_dict()
    assert set(state) == {"m", "v", "t", "d", "hold"}
    assert state["hold"]["w"].tolist() == [9.0, 0.0]  # default H 10: detected at step 2, one held step done
    b = _reset()
    b.load_state_dict(state)
    last = {"w": torch.tensor([0.5, -0.1])}
    torch.testing.assert_close(a.step(p, last)["w"], b.step(p, last)["w"])


def test_registered_and_validated() -> None:
    assert SERVER_OPTIMIZERS.get("flash_reset") is FlashReset
    assert isinstance(new_optimizer("flash_reset", reset_threshold=0.2, v_shrink=0.5, hold=0), FlashReset)
    for bad in ({"reset_threshold": 1.5}, {"v_shrink": -0.1}, {"warmup": -1}, {"hold": -1}, {"fedavg_lr": 0}):
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
