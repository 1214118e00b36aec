"""Gradient estimators on small closed-form losses, exactly: what one tangent gives, how
K tangents are averaged, what the server rebuilds from the scalars (bit for bit, in the
dtype the client used), the central difference's divisor, and the one-line errors.
Fast (no models), so mutation testing (``make mutate``) can run them for every mutant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtune.grad import (
    backprop_gradient,
    central_difference,
    forward_gradient,
    jvp,
    make_tangents,
    rebuild_gradient,
    spsa_gradient,
    tangent,
)
from fedtune.seeding import torch_generator

A = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
B = torch.tensor([0.25, -1.5, 2.0])


def quadratic(p):
    """L = Σ a² ⊙ A / 2 + b · B + (Σ b)²: ∇_a = a ⊙ A, ∇_b = B + 2 Σ b."""
    return (p["a"] ** 2 * A).sum() / 2 + (p["b"] * B).sum() + p["b"].sum() ** 2


PARAMS = {"a": torch.tensor([[0.3, -0.1], [0.7, 0.2]]), "b": torch.tensor([0.1, 0.4, -0.2])}
GRAD = {"a": PARAMS["a"] * A, "b": B + 2 * PARAMS["b"].sum()}


def _dot(g, v):
    return sum(float((g[n].double() * v[n].double()).sum()) for n in g)


def test_backprop_is_the_exact_gradient_and_leaves_inputs_alone():
    params = {n: p.clone() for n, p in PARAMS.items()}
    loss, grads = backprop_gradient(quadratic, params)
    assert float(loss) == pytest.approx(float(quadratic(PARAMS)))
    assert not loss.requires_grad and loss.dim() == 0
    for n in PARAMS:
        torch.testing.assert_close(grads[n], GRAD[n])
        assert not params[n].requires_grad and params[n].grad is None
    # a tensor the loss does not use gets a zero gradient of its own shape
    _, grads = backprop_gradient(lambda p: (p["a"] * A).sum(), {"a": PARAMS["a"], "unused": torch.ones(4)})
    assert torch.equal(grads["unused"], torch.zeros(4)) and torch.equal(grads["a"], A)
    with pytest.raises(ValueError, match=r"^the loss closure must return a scalar, got shape \(2, 2\)$"):
        backprop_gradient(lambda p: p["a"] * 2, {"a": PARAMS["a"]})
    with pytest.raises(FloatingPointError, match=r"^backprop loss is not finite"):
        backprop_gradient(lambda p: p["a"].sum() / 0.0, {"a": PARAMS["a"]})


def test_jvp_is_the_directional_derivative():
    v = make_tangents(PARAMS, 3, (1, 2, 3), 0)
    loss, d = jvp(quadratic, PARAMS, v)
    assert float(loss) == pytest.approx(float(quadratic(PARAMS)))
    assert float(d) == pytest.approx(_dot(GRAD, v), rel=1e-5)
    with pytest.raises(ValueError, match=r"^params and tangents differ in names: \['b'\]"):
        jvp(quadratic, PARAMS, {"a": v["a"]})
    with pytest.raises(ValueError, match=r"^the loss closure must return a scalar"):
        jvp(lambda p: p["a"] * 2, {"a": PARAMS["a"]}, {"a": v["a"]})
    with pytest.raises(FloatingPointError, match=r"^forward-gradient directional derivative is not finite"):
        jvp(lambda p: torch.sqrt(p["a"] - p["a"]).sum(), {"a": PARAMS["a"]}, {"a": v["a"]})


def test_forward_gradient_is_the_mean_of_d_k_v_k():
    est = forward_gradient(quadratic, PARAMS, seed=5, keys=(0, 1, 2), num_tangents=3)
    assert est.jvps.shape == (3,) and est.jvps.dtype == torch.float32
    expected = {n: torch.zeros_like(p) for n, p in PARAMS.items()}
    for k in range(3):
        v = make_tangents(PARAMS, 5, (0, 1, 2), k)
        assert float(est.jvps[k]) == pytest.approx(_dot(GRAD, v), rel=1e-5)
        for n in PARAMS:
            expected[n] += float(est.jvps[k]) * v[n] / 3
    for n in PARAMS:
        torch.testing.assert_close(est.grads[n], expected[n])
    assert float(est.loss) == pytest.approx(float(quadratic(PARAMS)))
    # the inputs are not touched, and the estimate is reproducible from the seed
    again = forward_gradient(quadratic, PARAMS, seed=5, keys=(0, 1, 2), num_tangents=3)
    assert all(torch.equal(again.grads[n], est.grads[n]) for n in PARAMS)
    other = forward_gradient(quadratic, PARAMS, seed=6, keys=(0, 1, 2), num_tangents=3)
    assert not torch.equal(other.grads["a"], est.grads["a"])
    with pytest.raises(ValueError, match=r"^num_tangents must be >= 1, got 0$"):
        forward_gradient(quadratic, PARAMS, seed=0, keys=(0,), num_tangents=0)
    with pytest.raises(ValueError, match=r"^forward_gradient needs at least one tensor"):
        forward_gradient(quadratic, {}, seed=0, keys=(0,))


def test_rebuild_matches_the_client_bit_for_bit_in_its_dtype():
    params64 = {n: p.double() for n, p in PARAMS.items()}
    est = forward_gradient(quadratic, params64, seed=9, keys=(4, 2, 7), num_tangents=2)
    meta = {n: torch.empty(p.shape, dtype=torch.float64, device="meta") for n, p in params64.items()}
    rebuilt = rebuild_gradient(est.jvps, meta, seed=9, keys=(4, 2, 7))
    for n in params64:
        assert rebuilt[n].dtype == torch.float64 and rebuilt[n].device.type == "cpu"
        assert torch.equal(rebuilt[n], est.grads[n])
    # the scalars travel as float32 whatever they arrive as: a float64 array rebuilds the same
    as_numpy = rebuild_gradient(np.array(est.jvps.tolist(), dtype=np.float64) + 1e-12, meta, 9, (4, 2, 7))
    assert all(torch.equal(as_numpy[n], rebuilt[n]) for n in params64)
    one = rebuild_gradient([2.0], {"w": torch.empty(3)}, 1, (0,))
    assert torch.equal(one["w"], 2.0 * make_tangents({"w": torch.empty(3)}, 1, (0,), 0)["w"])
    with pytest.raises(ValueError, match=r"^rebuild_gradient needs at least one directional derivative$"):
        rebuild_gradient([], meta, 9, (4, 2, 7))
    with pytest.raises(FloatingPointError, match=r"^received directional derivatives is not finite"):
        rebuild_gradient([1.0, float("nan")], meta, 9, (4, 2, 7))


def test_tangents_are_drawn_per_tensor_from_the_seed_schedule():
    params = {"x": torch.empty(2, 3, dtype=torch.float64), "y": torch.empty(2, 3)}
    v = make_tangents(params, 4, (1, 2), 0)
    assert v["x"].dtype == torch.float64 and v["y"].dtype == torch.float32
    assert v["x"].shape == (2, 3) and v["x"].device.type == "cpu"
    # same shape, different tensors: different directions (one shared draw would be biased)
    assert not torch.equal(v["x"].float(), v["y"])
    expected = torch.randn((2, 3), generator=torch_generator(4, "tangent", 1, 2, 0, "y"))
    assert torch.equal(v["y"], expected)
    assert torch.equal(v["x"], torch.randn((2, 3), generator=torch_generator(4, "tangent", 1, 2, 0, "x")).double())
    r = make_tangents(params, 4, (1, 2), 0, "rademacher")
    assert set(r["x"].unique().tolist()) <= {-1.0, 1.0} and r["x"].dtype == torch.float64
    bits = torch.randint(0, 2, (2, 3), generator=torch_generator(4, "tangent", 1, 2, 0, "y"), dtype=torch.int8)
    assert torch.equal(r["y"], bits.float() * 2 - 1)
    g = tangent((4,), 0, "k", dtype=torch.float16)
    assert g.dtype == torch.float16 and g.shape == (4,)
    assert torch.equal(g, torch.randn(4, generator=torch_generator(0, "k")).half())


def test_central_difference_divides_by_two_sigma():
    # on a quadratic the central difference is exact: (L(θ+σv) − L(θ−σv)) / 2σ = ∇L·v
    params = {n: p.double() for n, p in PARAMS.items()}
    v = {n: t.double() for n, t in make_tangents(PARAMS, 2, (0,), 0).items()}

    def loss64(p):
        return (p["a"] ** 2 * A.double()).sum() / 2 + (p["b"] * B.double()).sum() + p["b"].sum() ** 2

    mean, d = central_difference(loss64, params, v, sigma=0.5)
    grad64 = {"a": params["a"] * A.double(), "b": B.double() + 2 * params["b"].sum()}
    assert float(d) == pytest.approx(_dot(grad64, v), rel=1e-9)
    plus = loss64({n: params[n] + 0.5 * v[n] for n in params})
    minus = loss64({n: params[n] - 0.5 * v[n] for n in params})
    assert float(mean) == pytest.approx(float((plus + minus) / 2), rel=1e-12)
    with pytest.raises(ValueError, match=r"^sigma must be positive, got 0"):
        central_difference(loss64, params, v, sigma=0.0)
    with pytest.raises(FloatingPointError, match=r"^zeroth-order loss is not finite"):
        central_difference(lambda p: p["a"].sum() / 0.0, params, v)


def test_spsa_is_the_mean_of_the_central_differences_times_the_tangents():
    est = spsa_gradient(quadratic, PARAMS, seed=8, keys=(3,), num_perturbations=2, sigma=0.25)
    assert est.jvps.shape == (2,)
    expected = {n: torch.zeros_like(p) for n, p in PARAMS.items()}
    losses = []
    for k in range(2):
        v = make_tangents(PARAMS, 8, (3,), k)
        mean, d = central_difference(quadratic, PARAMS, v, sigma=0.25)
        assert float(est.jvps[k]) == float(d)
        losses.append(float(mean))
        for n in PARAMS:
            expected[n] += float(d) * v[n] / 2
    for n in PARAMS:
        torch.testing.assert_close(est.grads[n], expected[n])
    assert float(est.loss) == pytest.approx(sum(losses) / 2)
    meta = {n: torch.empty(p.shape, device="meta") for n, p in PARAMS.items()}
    rebuilt = rebuild_gradient(est.jvps, meta, seed=8, keys=(3,))
    assert all(torch.equal(rebuilt[n], est.grads[n]) for n in PARAMS)
    with pytest.raises(ValueError, match=r"^num_perturbations must be >= 1, got 0$"):
        spsa_gradient(quadratic, PARAMS, seed=0, keys=(0,), num_perturbations=0)


def test_defaults_and_the_tangent_distribution_reach_every_estimator():
    one = forward_gradient(quadratic, PARAMS, seed=1, keys=(0,))
    assert one.jvps.shape == (1,)
    spsa = spsa_gradient(quadratic, PARAMS, seed=1, keys=(0,))
    assert spsa.jvps.shape == (1,)
    v = make_tangents(PARAMS, 1, (0,), 0)
    mean, d = central_difference(quadratic, PARAMS, v, sigma=1e-3)
    assert float(spsa.loss) == pytest.approx(float(mean), rel=1e-6)  # σ = 1e-3 by default
    assert torch.equal(central_difference(quadratic, PARAMS, v)[0], mean)
    r = make_tangents(PARAMS, 1, (0,), 0, "rademacher")
    est = forward_gradient(quadratic, PARAMS, seed=1, keys=(0,), distribution="rademacher")
    for n in PARAMS:
        torch.testing.assert_close(est.grads[n], float(est.jvps[0]) * r[n])
    zo = spsa_gradient(quadratic, PARAMS, seed=1, keys=(0,), distribution="rademacher")
    _, d_r = central_difference(quadratic, PARAMS, r)
    assert float(zo.jvps[0]) == float(d_r)
    meta = {n: torch.empty(p.shape, device="meta") for n, p in PARAMS.items()}
    rebuilt = rebuild_gradient(est.jvps, meta, seed=1, keys=(0,), distribution="rademacher")
    assert all(torch.equal(rebuilt[n], est.grads[n]) for n in PARAMS)


def test_estimates_are_contiguous_for_non_contiguous_tensors():
    params = {"a": PARAMS["a"].t()}  # a transposed view

    def loss(p):
        return (p["a"] ** 2).sum()

    for est in (forward_gradient(loss, params, 0, (0,)), spsa_gradient(loss, params, 0, (0,))):
        assert est.grads["a"].is_contiguous()


def test_non_finite_values_are_caught_where_they_appear():
    w = {"w": torch.zeros(3)}
    v = {"w": torch.ones(3)}
    with pytest.raises(FloatingPointError, match=r"^zeroth-order loss is not finite"):
        central_difference(lambda p: torch.sqrt(p["w"]).sum(), w, v)  # only L(θ − σv) is NaN
    with pytest.raises(FloatingPointError, match=r"^zeroth-order loss is not finite"):
        central_difference(lambda p: torch.sqrt(-p["w"]).sum(), w, v)  # only L(θ + σv) is NaN
    with pytest.raises(FloatingPointError, match=r"^forward-gradient loss is not finite"):
        jvp(lambda p: (p["w"] * 0).sum() + float("nan"), w, v)  # a NaN loss, a finite derivative
    names = {f"t{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(ValueError, match=r"differ in names: \['t0', 't1', 't2', 't3', 't4'\]$"):
        jvp(lambda p: p["t0"].sum(), names, {})
