"""Golden tests of Flash's server optimizer against numbers computed by hand.

Coordinates of the test vector (β1 0.9, β2 0.99, τ 1e-3, η 0.1):
  0: 0.1, 0.1, then a drift to 0.5;   1: -0.2, -0.2, then a sign flip to 0.2;
  2: always 0 (β3's 0/0);             3: 0.01, 0.01, then a drift to 0.05.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS
from fedtune.algorithms.base import ClientTask, EarlyStopping, LocalParams
from fedtune.algorithms.fedavg import FedAvg
from fedtune.config import ConfigError
from fedtune.data.base import ClientData, Examples
from fedtune.models.base import get_trainable
from fedtune.server import SERVER_OPTIMIZERS, FedAdam, Flash, new_optimizer

B1, B2, TAU, LR = 0.9, 0.99, 1e-3, 0.1
DELTAS = [[0.1, -0.2, 0.0, 0.01], [0.1, -0.2, 0.0, 0.01], [0.5, 0.2, 0.0, 0.05]]

# Hand-computed values after each of the three rounds (m, v, d, β3, x per coordinate).
EXPECTED = [
    {  # round 1: v_0 = 0, so β3 = 0 where Δ ≠ 0 and d_1 = Δ² - v_1 = β2 Δ²; β3 = 1 (0/0) for coordinate 2
        "m": [0.01, -0.02, 0.0, 0.001],
        "v": [1e-4, 4e-4, 0.0, 1e-6],
        "beta3": [0.0, 0.0, 1.0, 0.0],
        "d": [0.0099, 0.0396, 0.0, 9.9e-5],
        # coordinate 1: √v - d + τ = 0.02 - 0.0396 + 0.001 < τ: guarded, FedAdam's 0.021
        "x": [0.1 * 0.01 / 0.0011, 0.1 * -0.02 / 0.021, 0.0, 0.1 * 0.001 / 0.001901],
        "guarded": 1,
    },
    {  # round 2: β3 = v_1 / (|Δ² - v_2| + v_1)
        "m": [0.019, -0.038, 0.0, 0.0019],
        "v": [1.99e-4, 7.96e-4, 0.0, 1.99e-6],
        "beta3": [1e-4 / (0.01 - 1.99e-4 + 1e-4), 4e-4 / (0.04 - 7.96e-4 + 4e-4), 1.0, 1e-6 / (1e-4 - 1.99e-6 + 1e-6)],
        "d": [0.009801999899000102, 0.03920799959600041, 0.0, 9.801999899000102e-05],
        "x": [1.267261413920533, -0.22531506812546703, 0.0, 0.13476059790499245],
        "guarded": 1,
    },
    {  # round 3, the drift: coordinate 0's d exceeds √v (guarded); coordinate 3's lr rises
        "m": [0.0671, -0.0142, 0.0, 0.00671],
        "v": [2.69701e-3, 1.18804e-3, 0.0, 2.69701e-5],
        "beta3": [0.0008040339392826709, 0.02009697040695862, 1.0, 0.0008040339392826704],
        "d": [0.24711203114334557, 0.03881991919604081, 0.0, 0.0024711203114334565],
        "x": [1.3940260471158876, -0.26535120651098043, 0.0, 0.3150325497286464],
        "guarded": 2,
    },
]


def _reference(seq: list[float], guard: bool = True) -> list[dict[str, float]]:
    """Equations (1)-(5) of one coordinate with plain floats (independent of the library)."""
    m = v = d = x = 0.0
    out = []
    for g in seq:
        v_prev = v
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        gap = g * g - v
        den3 = abs(gap) + abs(v_prev)
        beta3 = abs(v_prev) / den3 if den3 > 0 else 1.0
        d = beta3 * d + (1 - beta3) * gap
        den = math.sqrt(v) - d + TAU
        if guard and den < TAU:
            den = math.sqrt(v) + TAU
        x += LR * m / den
        out.append({"m": m, "v": v, "beta3": beta3, "d": d, "x": x})
    return out


def test_round_one_by_hand() -> None:
    # coordinate 0, Δ = 0.1: m = 0.1·0.1, v = 0.01·0.01, d = 0.01 - 1e-4, x = η m / (0.01 - 0.0099 + 0.001)
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    x = opt.step({"w": torch.zeros(1)}, {"w": torch.tensor([0.1])})["w"]
    assert float(opt.m["w"][0]) == pytest.approx(0.01)
    assert float(opt.v["w"][0]) == pytest.approx(1e-4)
    assert float(opt.d["w"][0]) == pytest.approx(0.0099)
    assert float(x[0]) == pytest.approx(0.001 / 0.0011, rel=1e-6)  # 10× FedAdam's 0.0909


@pytest.mark.parametrize("r", [0, 1, 2])
def test_three_rounds_golden(r: int) -> None:
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    params = {"w": torch.zeros(4, dtype=torch.float64)}
    for delta in DELTAS[: r + 1]:
        params = opt.step(params, {"w": torch.tensor(delta, dtype=torch.float64)})
    exp = EXPECTED[r]
    for name, got in (("m", opt.m["w"]), ("v", opt.v["w"]), ("d", opt.d["w"]), ("x", params["w"])):
        assert got.tolist() == pytest.approx(exp[name], rel=1e-9, abs=1e-15), name
    assert opt.round_metrics()["flash_guarded"] == exp["guarded"]
    assert opt.round_metrics()["flash_beta3_mean"] == pytest.approx(sum(exp["beta3"]) / 4, rel=1e-9)
    # the plain-float reference agrees with the table, β3 included
    for i in range(4):
        ref = _reference([row[i] for row in DELTAS])[r]
        for name in ("m", "v", "beta3", "d", "x"):
            assert ref[name] == pytest.approx(exp[name][i], rel=1e-9, abs=1e-15), (name, i)


def test_beta3_zero_over_zero_is_one() -> None:
    opt = Flash()
    z = torch.zeros(3, dtype=torch.float64)
    d, beta3 = opt.drift(torch.full((3,), 0.5, dtype=torch.float64), z, z, z)
    assert beta3.tolist() == [1.0, 1.0, 1.0]
    assert d.tolist() == [0.5, 0.5, 0.5]  # no drift evidence: d keeps its value


def test_guard_off_applies_equation_five_as_written() -> None:
    # coordinate 1, round 1: √v - d + τ = 0.02 - 0.0396 + 0.001 = -0.0186: the step reverses
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU, guard="off")
    x = opt.step({"w": torch.zeros(1, dtype=torch.float64)}, {"w": torch.tensor([-0.2], dtype=torch.float64)})["w"]
    assert float(x[0]) == pytest.approx(0.1 * -0.02 / (0.02 - 0.0396 + 0.001), rel=1e-9)
    assert float(x[0]) > 0
    assert "flash_guarded" in opt.round_metrics() and opt.round_metrics()["flash_guarded"] == 0


def test_floor_guard_caps_the_effective_lr_by_hand() -> None:
    # coordinate 1, round 1: √v - d + τ = -0.0186 < τ, so the denominator is τ: x = 0.1 · -0.02 / 1e-3
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU, guard="floor")
    x = opt.step({"w": torch.zeros(2, dtype=torch.float64)}, {"w": torch.tensor([0.1, -0.2], dtype=torch.float64)})["w"]
    assert x.tolist() == pytest.approx([0.1 * 0.01 / 0.0011, -2.0], rel=1e-9)
    assert opt.round_metrics()["flash_guarded"] == 1 and opt.round_metrics()["eff_lr_max"] == pytest.approx(LR / TAU)


def test_guard_accepts_the_old_switch() -> None:
    assert Flash(guard=True).guard == "fedadam" and Flash(guard=False).guard == "off"
    with pytest.raises(ConfigError, match="server.guard"):
        Flash(guard="clip")


def _fl4health(deltas: list[list[float]]) -> list[float]:
    """FL4Health's ``Flash`` strategy (fl4health/strategies/flash.py), restated with numpy:
    element-wise m, v, β3, d from zero, then x + η m / (√v - d + τ) with no guard."""
    import numpy as np

    m = v = d = x = np.zeros(len(deltas[0]))
    for delta in map(np.asarray, deltas):
        sq = delta**2
        m = B1 * m + (1 - B1) * delta
        v_prev, v = v, B2 * v + (1 - B2) * sq
        beta3 = np.abs(v_prev) / (np.abs(sq - v) + np.abs(v_prev))
        d = beta3 * d + (1 - beta3) * (sq - v)
        x = x + LR * m / (np.sqrt(v) - d + TAU)
    return x.tolist()


def test_equals_fl4health_with_the_guard_off() -> None:
    gen = torch.Generator().manual_seed(3)
    scales = [0.01, 0.01, 0.02, 0.5, 0.5, 0.01, 1e-4]  # calm, a drift, calm again (no zero: FL4Health's 0/0)
    deltas = [(torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 1).add(0.1).mul(s).tolist() for s in scales]
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU, guard="off")
    x = _steps(opt, deltas)
    assert x == pytest.approx(_fl4health(deltas), rel=1e-9)


def _steps(opt: Flash, deltas: list[list[float]]) -> list[float]:
    params = {"w": torch.zeros(len(deltas[0]), dtype=torch.float64)}
    for delta in deltas:
        params = opt.step(params, {"w": torch.tensor(delta, dtype=torch.float64)})
    return params["w"].tolist()


def test_v_init_tau_squared_by_hand() -> None:
    # FedCCFA's start v_0 = τ² = 1e-6, Δ = 0.1: v_1 = 0.99e-6 + 0.01·0.01 = 1.0099e-4,
    # β3 = 1e-6 / (0.01 - 1.0099e-4 + 1e-6), d_1 = (1 - β3)(0.01 - 1.0099e-4)
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU, v_init="tau2")
    x = _steps(opt, [[0.1, 0.0]])
    v1, gap = 1.0099e-4, 0.01 - 1.0099e-4
    beta3 = 1e-6 / (gap + 1e-6)
    d1 = (1 - beta3) * gap
    assert float(opt.v["w"][0]) == pytest.approx(v1, rel=1e-12)
    assert float(opt.d["w"][0]) == pytest.approx(d1, rel=1e-12)
    assert x[0] == pytest.approx(LR * 0.01 / (math.sqrt(v1) - d1 + TAU), rel=1e-9)
    # Δ = 0: v_0 > 0, so β3 = τ² / (β2 τ² + τ²) = 1/(1 + β2) is defined (no 0/0), and
    # d_1 = (1 - β3)(0 - β2 τ²) = -β2² τ² / (1 + β2); m = 0 so x does not move
    assert float(opt.d["w"][1]) == pytest.approx(-(B2**2) * TAU**2 / (1 + B2), rel=1e-12) and x[1] == 0.0
    assert opt.round_metrics()["flash_beta3_mean"] == pytest.approx((beta3 + 1 / (1 + B2)) / 2, rel=1e-9)


def test_effective_lr_metrics_round_one() -> None:
    opt = Flash(lr=LR, beta1=B1, beta2=B2, tau=TAU)
    opt.step({"w": torch.zeros(4, dtype=torch.float64)}, {"w": torch.tensor(DELTAS[0], dtype=torch.float64)})
    eff = [LR / 0.0011, LR / 0.021, LR / 0.001, LR / 0.001901]
    metrics = opt.round_metrics()
    assert metrics["eff_lr_mean"] == pytest.approx(sum(eff) / 4, rel=1e-9)
    assert metrics["eff_lr_max"] == pytest.approx(max(eff), rel=1e-9)
    assert metrics["flash_guarded_frac"] == pytest.approx(0.25)


class _NoDrift(Flash):
    def drift(self, d, v_prev, v, delta):
        return torch.zeros_like(d), torch.ones_like(d)


def test_zero_drift_is_fedadam() -> None:
    gen = torch.Generator().manual_seed(0)
    flash, adam = _NoDrift(lr=0.05), FedAdam(lr=0.05)
    p_flash = p_adam = {"a": torch.zeros(5, 3), "b": torch.zeros(7)}
    for _ in range(6):
        delta = {k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in p_adam.items()}
        p_flash, p_adam = flash.step(p_flash, delta), adam.step(p_adam, delta)
        for k in p_adam:
            torch.testing.assert_close(p_flash[k], p_adam[k], rtol=1e-5, atol=1e-7)
    assert flash.round_metrics()["flash_guarded"] == 0


ADVERSARIAL = {
    "zeros": [0.0] * 6,
    "huge": [1e30] * 6,
    "huge_sign_flips": [1e30, -1e30] * 3,
    "float32_max_flips": [3e38, -3e38, 3e38, 0.0, -3e38, 3e38],
    "tiny": [1e-30, -1e-38, 1e-45, 0.0, 1e-30, -1e-30],
    "jump_after_calm": [1e-6] * 4 + [1e20, -1e20],
    "calm_after_huge": [1e30, 1e-8, 1e-8, 0.0, 1e-8, -1e-8],
}


@pytest.mark.parametrize("guard", ["fedadam", "floor", "off"])
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_updates_stay_finite(case: str, guard: bool) -> None:
    opt = Flash(lr=1.0, guard=guard)
    params = {"w": torch.zeros(4)}
    for g in ADVERSARIAL[case]:
        delta = {"w": torch.tensor([g, -g, g / 3, 0.0], dtype=torch.float32)}
        params = opt.step(params, delta)
        assert torch.isfinite(params["w"]).all(), (case, params)
        assert all(math.isfinite(v) for v in opt.round_metrics().values())


def test_nonfinite_update_is_refused() -> None:
    with pytest.raises(FloatingPointError, match="'w'"):
        Flash().step({"w": torch.zeros(2)}, {"w": torch.tensor([1.0, float("nan")])})


def test_state_dict_round_trip_includes_d() -> None:
    a = Flash(lr=LR)
    p = {"w": torch.zeros(4)}
    for delta in DELTAS[:2]:
        p = a.step(p, {"w": torch.tensor(delta)})
    state = a.state_dict()
    assert set(state) == {"m", "v", "t", "d"}
    b = Flash(lr=LR)
    b.load_state_dict(state)
    last = {"w": torch.tensor(DELTAS[2])}
    torch.testing.assert_close(a.step(p, last)["w"], b.step(p, last)["w"])


def test_registered_and_validated() -> None:
    assert SERVER_OPTIMIZERS.get("flash") is Flash
    assert isinstance(new_optimizer("flash", lr=0.1, guard="off", v_init="tau2"), Flash)
    with pytest.raises(ValueError, match="positive"):
        Flash(tau=0.0)


# -- client early stopping and the Flash algorithm --------------------------------------



def test_early_stopping_rule_by_hand() -> None:
    rule = EarlyStopping(gamma=0.05)
    assert not rule.should_stop(1.0)  # e=1: inf - 1.0 >= 0.05
    assert not rule.should_stop(0.9)  # e=2: 0.1 >= 0.025
    assert rule.should_stop(0.89)  # e=3: 0.01 < 0.0167
    zero = EarlyStopping(gamma=0.0)
    assert not zero.should_stop(1.0) and not zero.should_stop(0.5) and zero.should_stop(0.6)  # only a rise stops


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, batch):
        return self.fc(batch["x"])


def _client_data() -> ClientData:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 4, generator=g)
    y = x[:, :3].argmax(1)
    ex = Examples({"x": x, "labels": y})
    return ClientData(train=ex.subset(range(40)), val=ex.subset(range(40, 50)), test=ex.subset(range(50, 60)))


@pytest.mark.parametrize(("gamma", "epochs"), [(None, 6), (1e6, 2), (0.0, None)])
def test_client_update_stops_early(gamma, epochs) -> None:
    model = _Linear()
    algo = FedAvg(LocalParams(local_epochs=6, batch_size=8, lr=0.1, early_stop_gamma=gamma), FedAdam())
    result, state = algo.client().fit(model, get_trainable(model), _client_data(), ClientTask(client_id=3, round=1, seed=0))
    assert state is None
    if epochs is not None:
        assert result.metrics["epochs"] == epochs
    assert ("early_stopped" in result.metrics) == (gamma is not None)
    if gamma == 1e6:
        assert result.metrics["early_stopped"] == 1.0 and result.metrics["steps"] == 2 * 5


def test_flash_algorithm_defaults_and_server_check() -> None:
    cls = ALGORITHMS.get("flash")
    params = cls.Params()
    assert params.early_stop_gamma == 0.01 and params.local_epochs == 5
    algo = cls(params)
    assert isinstance(algo.server_optimizer, Flash)
    with pytest.raises(ConfigError, match='name = "flash"'):
        cls(params, FedAdam())
    model = _Linear()
    state = get_trainable(model)
    result, _ = algo.client().fit(model, state, _client_data(), ClientTask(client_id=0, round=1, seed=0))
    new = algo.aggregate(1, state, [result])
    assert set(new) == set(state) and all(torch.isfinite(t).all() for t in new.values())
    metrics = algo.round_metrics([result])
    assert metrics["epochs_mean"] == result.metrics["epochs"] and "flash_guarded" in metrics
