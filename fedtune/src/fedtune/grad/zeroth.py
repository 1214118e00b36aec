"""Zeroth-order gradient estimates from loss values only (the Spry paper's baselines).

Simultaneous-perturbation (SPSA, Spall 1992) central differences as used by MeZO
(Malladi et al., NeurIPS 2023, arXiv 2305.17333), BAFFLE and FwdLLM:
``d ≈ (L(θ + σv) − L(θ − σv)) / (2σ)`` estimates the directional derivative ``∇L·v``,
and ``(1/K) Σ_k d_k v_k`` estimates ``∇L``. Note the divisor 2σ (the released BAFFLE
code divides by something else), and both passes must see the same function: build the
closure with ``model_loss(..., dropout=False)`` (the released baselines kept dropout
on). Tangents come from the same seed schedule as :mod:`fedtune.grad.forward`, so
the server can rebuild an estimate from the K scalars with ``rebuild_gradient``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fedtune.grad.forward import Distribution, ForwardGradient, _accumulate, make_tangents
from fedtune.grad.functional import LossClosure, Params, check_finite
from fedtune.seeding import Key


def central_difference(loss_fn: LossClosure, params: Params, direction: Params, sigma: float = 1e-3) -> tuple[Tensor, Tensor]:
    """``(L(θ+σv) + L(θ−σv)) / 2`` and ``(L(θ+σv) − L(θ−σv)) / (2σ)`` for one direction v."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    with torch.no_grad():
        plus = loss_fn({n: p.detach() + sigma * direction[n] for n, p in params.items()})
        minus = loss_fn({n: p.detach() - sigma * direction[n] for n, p in params.items()})
    check_finite("zeroth-order loss", plus, minus)
    return (plus + minus) / 2, (plus - minus) / (2 * sigma)


def spsa_gradient(
    loss_fn: LossClosure,
    params: Params,
    seed: int,
    keys: Sequence[Key],
    num_perturbations: int = 1,
    sigma: float = 1e-3,
    distribution: Distribution = "gaussian",
) -> ForwardGradient:
    """Estimate ``∇L`` over ``params`` from ``2 K`` loss evaluations (SPSA / MeZO).

    Returns a :class:`ForwardGradient` whose ``jvps`` are the K finite-difference
    directional derivatives. The closure must be deterministic (dropout off).
    """
    if num_perturbations < 1:
        raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
    grads = {name: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for name, p in params.items()}
    scalars = torch.empty(num_perturbations, dtype=torch.float32)
    total = 0.0
    for k in range(num_perturbations):
        v = make_tangents(params, seed, keys, k, distribution)
        loss, d = central_difference(loss_fn, params, v, sigma)
        scalars[k] = d.float()
        total += float(loss)
        _accumulate(grads, v, float(scalars[k]), num_perturbations)
        del v
    return ForwardGradient(loss=torch.tensor(total / num_perturbations), grads=grads, jvps=scalars)
