"""Zeroth-order gradient estimates from loss values only (the Spry paper's baselines).

Simultaneous-perturbation (SPSA, Spall 1992) central differences as used by MeZO
(Malladi et al., NeurIPS 2023, arXiv 2305.17333), BAFFLE and FwdLLM:
``d ≈ (L(θ + σv) − L(θ − σv)) / (2σ)`` estimates the directional derivative ``∇L·v``,
and ``(1/K) Σ_k d_k v_k`` estimates ``∇L``. Note the divisor 2σ (the released BAFFLE
code divides by something else), and both passes must see the same function: build the
closure with ``model_loss(..., dropout=False)`` (the released baselines kept dropout
on). Tangents come from the same seed schedule as :mod:`fedtune.grad.forward`, so
the server can rebuild an estimate from the K scalars with ``rebuild_gradient``.

MeZO's memory-efficient variant (:func:`mezo_directional`, :func:`seeded_sgd_step_`)
never stores a perturbation: it moves the tensors in place, θ → θ+εz → θ−εz → θ,
regenerating z tensor by tensor from its seed for each move, and applies the update
θ ← θ − η d z the same way (Malladi et al., Algorithm 1), so a step holds no more than an
inference pass does. In floating point the three moves restore θ only to rounding
(each element within a few ulps of max(|θ|, 2ε|z|)); MeZO's released code has the same
property.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedtune.grad.forward import Distribution, ForwardGradient, _accumulate, make_tangents, tangent
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


def perturb_(params: Mapping[str, Tensor], seed: int, keys: Sequence[Key], k: int, scale: float,
             distribution: Distribution = "gaussian") -> None:
    """In place, θ ← θ + scale · z_k, with z_k regenerated one tensor at a time from its seed.

    ``z_k`` is the ``k``-th tangent of :func:`~fedtune.grad.make_tangents` at ``keys`` (the
    same values, so the server's ``rebuild_gradient`` sees the same perturbation); at most
    one tensor's worth of it exists at any time.
    """
    with torch.no_grad():
        for name, p in params.items():
            z = tangent(p.shape, seed, "tangent", *keys, k, name, distribution=distribution, dtype=p.dtype, device=p.device)
            p.add_(z, alpha=scale)
            del z


def mezo_directional(
    loss_fn: LossClosure,
    params: Params,
    seed: int,
    keys: Sequence[Key],
    k: int = 0,
    eps: float = 1e-3,
    distribution: Distribution = "gaussian",
) -> tuple[Tensor, Tensor]:
    """MeZO's two passes, in place: ``((L₊ + L₋)/2, (L₊ − L₋)/(2ε))`` for the seeded z_k.

    ``params`` are moved to θ+εz, then θ−εz, then back to θ (to rounding; see the module
    docstring), without storing z. The closure must be deterministic (dropout off).
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    losses = []
    for scale in (eps, -2 * eps, eps):  # θ+εz, θ−εz, back to θ
        perturb_(params, seed, keys, k, scale, distribution)
        if len(losses) < 2:
            with torch.no_grad():
                losses.append(loss_fn(params))
    plus, minus = losses
    check_finite("zeroth-order loss", plus, minus)
    return (plus + minus) / 2, (plus - minus) / (2 * eps)


def mezo_gradient(
    loss_fn: LossClosure,
    params: Params,
    seed: int,
    keys: Sequence[Key],
    num_perturbations: int = 1,
    eps: float = 1e-3,
    distribution: Distribution = "gaussian",
) -> ForwardGradient:
    """SPSA with MeZO's in-place perturbations: ``(1/K) Σ_k d_k z_k`` (Malladi et al. 2023).

    The same estimate as :func:`spsa_gradient` up to rounding, with the passes run by
    :func:`mezo_directional`; the estimate itself is materialized here (a client that
    must stay at inference memory applies it with :func:`seeded_sgd_step_` instead).
    ``params`` are moved and restored in place, so pass the client's own copies.
    """
    if num_perturbations < 1:
        raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
    scalars = torch.empty(num_perturbations, dtype=torch.float32)
    total = 0.0
    for k in range(num_perturbations):
        loss, d = mezo_directional(loss_fn, params, seed, keys, k, eps, distribution)
        scalars[k] = d.float()
        total += float(loss)
    grads = {name: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for name, p in params.items()}
    for k in range(num_perturbations):
        _accumulate(grads, make_tangents(params, seed, keys, k, distribution), float(scalars[k]), num_perturbations)
    return ForwardGradient(loss=torch.tensor(total / num_perturbations), grads=grads, jvps=scalars)


def seeded_sgd_step_(
    params: Mapping[str, Tensor],
    scalars: Tensor | Sequence[float],
    lr: float,
    seed: int,
    keys: Sequence[Key],
    weight_decay: float = 0.0,
    distribution: Distribution = "gaussian",
) -> None:
    """MeZO's update in place: θ ← θ − η (λθ + (1/K) Σ_k d_k z_k), each z_k regenerated.

    Client and server call this same function (the server in per-iteration mode, from the
    K scalars it was sent), so both compute the same tensors bit for bit.
    """
    values = torch.as_tensor(scalars, dtype=torch.float32).flatten()
    check_finite("zeroth-order directional derivatives", values)
    if weight_decay:
        with torch.no_grad():
            for p in params.values():
                p.mul_(1 - lr * weight_decay)
    for k in range(values.numel()):
        perturb_(params, seed, keys, k, -lr * float(values[k]) / values.numel(), distribution)


def mezo_replay_step_(
    params: Mapping[str, Tensor],
    scalars: Tensor | Sequence[float],
    lr: float,
    seed: int,
    keys: Sequence[Key],
    eps: float = 1e-3,
    weight_decay: float = 0.0,
    distribution: Distribution = "gaussian",
) -> None:
    """A client's MeZO step rebuilt from its K scalars, bit for bit (per-iteration mode).

    Makes the same three moves per perturbation as :func:`mezo_directional` (without the
    loss evaluations), so the rounding they leave in θ is the client's, then applies
    :func:`seeded_sgd_step_`.
    """
    values = torch.as_tensor(scalars, dtype=torch.float32).flatten()
    for k in range(values.numel()):
        for scale in (eps, -2 * eps, eps):
            perturb_(params, seed, keys, k, scale, distribution)
    seeded_sgd_step_(params, values, lr, seed, keys, weight_decay, distribution)
