"""Gradient estimators: jvp = backprop·v, unbiasedness, per-iteration rebuild, SPSA."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import text_batch

from fedtune.data.base import DatasetInfo
from fedtune.grad import (
    backprop_gradient,
    central_difference,
    forward_gradient,
    jvp,
    make_tangents,
    model_loss,
    rebuild_gradient,
    spsa_gradient,
    tangent,
)
from fedtune.models.hf import build_hf_model

CASES = {"bert": "classification", "gpt2": "causal_lm", "llama": "causal_lm"}


def _model(tiny_dir, family, **options):
    info = DatasetInfo(name="t", task=CASES[family], num_classes=3 if CASES[family] == "classification" else 97)
    torch.manual_seed(1)
    return build_hf_model(str(tiny_dir[family]), info, lora_b_init_std=0.1, **options)


def _trainables(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", list(CASES))
def test_jvp_equals_backprop_dot_tangent(tiny_dir, family):
    model = _model(tiny_dir, family)
    batch = text_batch(CASES[family])
    params = _trainables(model)
    loss_fn = model_loss(model, batch, dropout=False)
    loss_b, grads = backprop_gradient(loss_fn, params)
    v = make_tangents(params, seed=3, keys=(0, 1, 2), k=0)
    loss_f, d = jvp(loss_fn, params, v)
    expected = sum((grads[n].double() * v[n].double()).sum() for n in params)
    assert torch.allclose(loss_f, loss_b, rtol=1e-6)
    assert abs(float(d) - float(expected)) <= 1e-4 * abs(float(expected))
    assert all(p.grad is None for p in params.values())  # no autograd leak from the jvp


def test_jvp_under_sdpa_attention(tiny_dir):
    model = _model(tiny_dir, "llama", attn_implementation="sdpa")
    batch = text_batch("causal_lm")
    params = _trainables(model)
    loss_fn = model_loss(model, batch)
    _, grads = backprop_gradient(loss_fn, params)
    v = make_tangents(params, 0, (0,), 0)
    _, d = jvp(loss_fn, params, v)
    expected = sum((grads[n] * v[n]).sum() for n in params)
    assert abs(float(d) - float(expected)) <= 1e-4 * abs(float(expected))


def test_chunked_loss_matches_full_loss(tiny_dir):
    model = _model(tiny_dir, "llama")
    batch = text_batch("causal_lm", seq=11)
    params = _trainables(model)
    full, chunked = model_loss(model, batch), model_loss(model, batch, loss_chunk_size=4)
    v = make_tangents(params, 0, (1,), 0)
    loss_a, d_a = jvp(full, params, v)
    loss_b, d_b = jvp(chunked, params, v)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5) and torch.allclose(d_a, d_b, rtol=1e-4)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_forward_gradient_is_unbiased(distribution):
    # Logistic regression with D = 12 weights: the mean of N estimates has expected squared
    # error (D ± 1)|g|²/N, so with N = 4000 the relative error is about 0.055; allow 0.25.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    params = {"w": torch.randn(3, 4, generator=g) * 0.5}

    def loss_fn(p):
        return torch.nn.functional.cross_entropy(x @ p["w"].T, y)

    _, exact = backprop_gradient(loss_fn, params)
    est = forward_gradient(loss_fn, params, seed=7, keys=(0, 0, 0), num_tangents=4000, distribution=distribution)
    rel = float((est.grads["w"] - exact["w"]).norm() / exact["w"].norm())
    assert rel < 0.25, rel


def test_forward_gradient_unbiased_on_hf_head(tiny_dir):
    model = _model(tiny_dir, "bert")
    batch = text_batch("classification")
    params = {n: p for n, p in _trainables(model).items() if n.endswith("classifier.bias")}
    loss_fn = model_loss(model, batch, dropout=False)
    _, exact = backprop_gradient(loss_fn, params)
    est = forward_gradient(loss_fn, params, seed=1, keys=(0,), num_tangents=400)
    (name,) = params
    rel = float((est.grads[name] - exact[name]).norm() / exact[name].norm())
    assert rel < 0.5, rel  # expected about sqrt(4/400) = 0.1


def test_per_iteration_rebuild_equals_client_estimate(tiny_dir):
    model = _model(tiny_dir, "gpt2")
    batch = text_batch("causal_lm")
    params = _trainables(model)
    est = forward_gradient(model_loss(model, batch), params, seed=11, keys=(2, 5, 3), num_tangents=3)
    shapes = {n: torch.empty(p.shape, device="meta") for n, p in params.items()}
    rebuilt = rebuild_gradient(est.jvps.tolist(), shapes, seed=11, keys=(2, 5, 3))
    assert est.jvps.shape == (3,)
    assert all(torch.equal(rebuilt[n], est.grads[n]) for n in params)


def test_tangents_differ_per_key_and_are_reproducible():
    a = tangent((5,), 0, "tangent", 1, 2, 3, 0, "w")
    assert torch.equal(a, tangent((5,), 0, "tangent", 1, 2, 3, 0, "w"))
    for other in [(2, 2, 3, 0, "w"), (1, 3, 3, 0, "w"), (1, 2, 4, 0, "w"), (1, 2, 3, 1, "w"), (1, 2, 3, 0, "b")]:
        assert not torch.equal(a, tangent((5,), 0, "tangent", *other))
    r = tangent((1000,), 0, "x", distribution="rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="unknown tangent distribution"):
        tangent((2,), 0, distribution="uniform")


def test_central_difference_matches_directional_derivative(tiny_dir):
    model = _model(tiny_dir, "gpt2", dtype="float64")  # Llama's RMSNorm rounds through float32
    batch = text_batch("causal_lm")
    params = _trainables(model)
    loss_fn = model_loss(model, batch, dropout=False, loss_chunk_size=64)  # float64 loss end to end
    v = make_tangents(params, 0, (0,), 0)
    _, d = jvp(loss_fn, params, v)
    assert d.dtype == torch.float64
    _, fd = central_difference(loss_fn, params, v, sigma=1e-5)
    assert abs(float(fd) - float(d)) <= 1e-6 * abs(float(d))
    est = spsa_gradient(loss_fn, params, seed=0, keys=(0,), num_perturbations=1, sigma=1e-5)
    assert abs(float(est.jvps[0]) - float(d)) <= 1e-5 * abs(float(d))


def test_non_finite_loss_is_an_error():
    params = {"w": torch.ones(2)}
    with pytest.raises(FloatingPointError, match="not finite"):
        forward_gradient(lambda p: (p["w"] * float("nan")).sum(), params, seed=0, keys=(0,))
