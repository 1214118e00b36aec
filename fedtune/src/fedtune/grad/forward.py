"""Forward gradients: unbiased gradient estimates from forward-mode AD alone.

For a tangent ``v ~ N(0, I)`` (or Rademacher), the directional derivative
``d = ∇L·v`` comes out of one forward pass with a jvp, and ``g = d v`` is an unbiased
estimate of ``∇L`` because ``E[v vᵀ] = I`` (Baydin et al., "Gradients without
Backpropagation", 2022, arXiv 2202.08587). Averaging over K tangents gives
``(1/K) Σ_k d_k v_k``. Spry (Panchal et al., NeurIPS 2024, arXiv 2405.15551) uses this
on each client with only a share of the trainable tensors, since the estimate's
variance grows with the number of tensors perturbed.

Memory: each jvp runs over detached primals under ``torch.no_grad()`` so autograd
records no backward graph, and the K tangents are looped over (``vmap`` over K would
multiply memory by K).

Tangents are regenerated from seeds: the tangent of tangent index ``k`` for tensor
``name`` at (round, client, step) is drawn from a generator seeded by
``(run seed, "tangent", round, client, step, k, name)``. A server holding the K scalars
``d_k`` of a step rebuilds the client's estimate exactly with :func:`rebuild_gradient`
(Spry's per-iteration communication).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fedtune.grad.functional import LossClosure, Params, check_finite, detached, math_attention
from fedtune.seeding import Key, torch_generator

Distribution = Literal["gaussian", "rademacher"]
DISTRIBUTIONS: tuple[str, ...] = ("gaussian", "rademacher")


def tangent(
    shape: Sequence[int] | torch.Size,
    seed: int,
    *keys: Key,
    distribution: Distribution = "gaussian",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """One random direction of ``shape``, determined by ``(seed, *keys)`` alone.

    Drawn in float32 on a CPU generator and then cast/moved, so every machine (and the
    server) regenerates the same values whatever the device. Gaussian entries are
    N(0, 1); Rademacher entries are ±1 with equal probability (both have E[v vᵀ] = I).
    """
    g = torch_generator(seed, *keys)
    shape = tuple(shape)
    if distribution == "gaussian":
        v = torch.randn(shape, generator=g, dtype=torch.float32)
    elif distribution == "rademacher":
        v = torch.randint(0, 2, shape, generator=g, dtype=torch.int8).to(torch.float32).mul_(2).sub_(1)
    else:
        raise ValueError(f"unknown tangent distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    return v.to(dtype=dtype, device=device)


def make_tangents(
    params: Mapping[str, Tensor],
    seed: int,
    keys: Sequence[Key],
    k: int,
    distribution: Distribution = "gaussian",
) -> dict[str, Tensor]:
    """The ``k``-th tangent for every tensor of ``params`` at step ``keys``.

    ``keys`` is the step's path, typically ``(round, client, step)``; each tensor's seed is
    ``(seed, "tangent", *keys, k, name)``, so tangents differ per tensor, per k and per
    step (one seed per round would make every tangent identical). ``params`` only
    supplies names, shapes, dtypes and devices (a meta tensor works).
    """
    return {
        name: tangent(p.shape, seed, "tangent", *keys, k, name, distribution=distribution, dtype=p.dtype,
                      device=p.device if p.device.type != "meta" else "cpu")
        for name, p in params.items()
    }


def jvp(loss_fn: LossClosure, params: Params, tangents: Params) -> tuple[Tensor, Tensor]:
    """The loss at ``params`` and its directional derivative ``∇L·v`` in one forward pass.

    One :func:`torch.func.jvp` over detached primals under ``torch.no_grad()`` and the
    math attention kernel. Returns two 0-dim tensors ``(loss, d)``.
    """
    missing = set(params) ^ set(tangents)
    if missing:
        raise ValueError(f"params and tangents differ in names: {sorted(missing)[:5]}")
    with torch.no_grad(), math_attention():
        loss, d = torch.func.jvp(loss_fn, (detached(params),), ({n: tangents[n] for n in params},))
    if loss.dim() != 0:
        raise ValueError(f"the loss closure must return a scalar, got shape {tuple(loss.shape)}")
    check_finite("forward-gradient loss", loss)
    check_finite("forward-gradient directional derivative", d)
    return loss, d


@dataclass(frozen=True)
class ForwardGradient:
    """A forward-gradient estimate of one step.

    Attributes:
        loss: the loss at the current tensors (mean over the K passes).
        grads: the estimate ``(1/K) Σ_k d_k v_k``, keyed like the params.
        jvps: the K directional derivatives ``d_k`` (float32, shape (K,)): all a client
            sends per step in Spry's per-iteration mode.
    """

    loss: Tensor
    grads: dict[str, Tensor]
    jvps: Tensor


def _accumulate(grads: dict[str, Tensor], tangents: Mapping[str, Tensor], d: float, num_tangents: int) -> None:
    for name, g in grads.items():
        g.add_(tangents[name], alpha=d / num_tangents)


def forward_gradient(
    loss_fn: LossClosure,
    params: Params,
    seed: int,
    keys: Sequence[Key],
    num_tangents: int = 1,
    distribution: Distribution = "gaussian",
) -> ForwardGradient:
    """Estimate ``∇L`` over ``params`` with ``num_tangents`` jvps (Baydin et al. 2022).

    Args:
        loss_fn: closure ``params -> scalar loss`` (see :func:`fedtune.grad.model_loss`).
        params: the tensors to differentiate (e.g. one Spry client's layer groups);
            every other tensor of the model is held fixed.
        seed: the run seed.
        keys: the step's key path, e.g. ``(round, client, step)``; see :func:`make_tangents`.
        num_tangents: K, the number of jvps averaged (Spry's default is 1).
        distribution: ``"gaussian"`` (default) or ``"rademacher"`` tangents.
    """
    if num_tangents < 1:
        raise ValueError(f"num_tangents must be >= 1, got {num_tangents}")
    if not params:
        raise ValueError("forward_gradient needs at least one tensor to differentiate")
    grads = {name: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for name, p in params.items()}
    jvps = torch.empty(num_tangents, dtype=torch.float32)
    total_loss = 0.0
    for k in range(num_tangents):
        v = make_tangents(params, seed, keys, k, distribution)
        loss, d = jvp(loss_fn, params, v)
        jvps[k] = d.float()
        total_loss += float(loss)
        _accumulate(grads, v, float(jvps[k]), num_tangents)
        del v
    return ForwardGradient(loss=torch.tensor(total_loss / num_tangents), grads=grads, jvps=jvps)


def rebuild_gradient(
    jvps: Tensor | Sequence[float],
    params: Mapping[str, Tensor],
    seed: int,
    keys: Sequence[Key],
    distribution: Distribution = "gaussian",
) -> dict[str, Tensor]:
    """The server side of per-iteration communication: ``(1/K) Σ_k d_k v_k`` from the scalars.

    Regenerates the tangents from ``(seed, keys)`` exactly as the client drew them and
    returns the same estimate :func:`forward_gradient` computed (bit for bit on the same
    device and dtype). ``params`` only supplies names, shapes and dtypes.
    """
    scalars = torch.as_tensor(jvps, dtype=torch.float32).flatten()
    if scalars.numel() == 0:
        raise ValueError("rebuild_gradient needs at least one directional derivative")
    check_finite("received directional derivatives", scalars)
    num_tangents = scalars.numel()
    grads = {name: torch.zeros(p.shape, dtype=p.dtype, device=p.device if p.device.type != "meta" else "cpu")
             for name, p in params.items()}
    for k in range(num_tangents):
        _accumulate(grads, make_tangents(params, seed, keys, k, distribution), float(scalars[k]), num_tangents)
    return grads
