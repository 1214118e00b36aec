"""Forward gradients for the body, the exact gradient for the task head, from one pass.

A variant of Spry's client (Panchal et al., NeurIPS 2024, arXiv 2405.15551): a freshly
initialized classification head holds nearly all of the gradient's norm, so a jvp over
the adapters *and* the head is mostly the head's directional derivative, and the
estimate ``d v`` puts noise of that size on every adapter. Here the head is taken out
of the jvp: the tangents ``v_k`` cover the body's tensors only, and the head's gradient
is computed exactly by reverse mode in the same forward pass.

One pass per tangent with :mod:`torch.autograd.forward_ad`: the body's tensors are dual
tensors ``(θ_b, v_k)`` and the head's tensors are leaves that require grad. Autograd
records only the operations that depend on the head (the head itself and the loss), so
the only activations kept for the backward pass are the head's input features (B × H)
and the loss' inputs; the body keeps forward-mode memory. The pass gives the loss, its
directional derivative ``d_k = ∇_b L · v_k`` and, by a backward pass through the head
alone, ``∇_h L`` exactly. The estimate is

    g_b = (1/K) Σ_k d_k v_k          (unbiased, as in :func:`fedtune.grad.forward_gradient`)
    g_h = (1/K) Σ_k ∇_h L_k          (exact; the K passes differ only with dropout on)

Tangents come from the same seed schedule as :func:`fedtune.grad.make_tangents`, so the
body's part equals the forward gradient over the body's tensors alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.autograd.forward_ad as fwAD

from fedtune.grad.forward import Distribution, ForwardGradient, make_tangents
from fedtune.grad.functional import LossClosure, Params, check_finite, math_attention
from fedtune.seeding import Key


def exact_head_gradient(
    loss_fn: LossClosure,
    params: Params,
    exact: Collection[str],
    seed: int,
    keys: Sequence[Key],
    num_tangents: int = 1,
    distribution: Distribution = "gaussian",
) -> ForwardGradient:
    """Forward gradients over ``params`` not in ``exact``, exact gradients over those in it.

    Args:
        loss_fn: closure ``params -> scalar loss`` (:func:`fedtune.grad.model_loss`).
        params: the tensors to differentiate.
        exact: names (a subset of ``params``) whose gradient is computed exactly by
            reverse mode; they must sit at the end of the computation (a task head),
            otherwise autograd stores the activations between them and the loss.
        seed, keys, num_tangents, distribution: the tangents of the other tensors, as in
            :func:`fedtune.grad.forward_gradient`.

    Returns a :class:`ForwardGradient` whose ``jvps`` are the K directional derivatives
    over the forward-gradient tensors (the exact part cannot be rebuilt from them).
    """
    if num_tangents < 1:
        raise ValueError(f"num_tangents must be >= 1, got {num_tangents}")
    unknown = set(exact) - set(params)
    if unknown:
        raise ValueError(f"exact names not among the params: {sorted(unknown)[:3]}")
    body = {n: p.detach() for n, p in params.items() if n not in exact}  # empty: the head alone, exactly
    grads = {n: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for n, p in params.items()}
    jvps = torch.empty(num_tangents, dtype=torch.float32)
    total_loss = 0.0
    for k in range(num_tangents):
        v = make_tangents(body, seed, keys, k, distribution)
        head = {n: params[n].detach().requires_grad_(True) for n in exact}
        with fwAD.dual_level(), torch.enable_grad(), math_attention():
            duals = {n: fwAD.make_dual(p, v[n]) for n, p in body.items()}
            loss = loss_fn({**duals, **head})
            if loss.dim() != 0:
                raise ValueError(f"the loss closure must return a scalar, got shape {tuple(loss.shape)}")
            primal, tangent = fwAD.unpack_dual(loss)
            d = torch.zeros(()) if tangent is None else tangent.detach()
            head_grads = torch.autograd.grad(primal, list(head.values()), allow_unused=True) if head else ()
        check_finite("exact-head loss", primal.detach())
        check_finite("exact-head directional derivative", d)
        jvps[k] = d.float()
        total_loss += float(primal.detach())
        for n, t in v.items():
            grads[n].add_(t, alpha=float(jvps[k]) / num_tangents)
        for n, g in zip(head, head_grads, strict=True):
            if g is not None:
                check_finite(f"exact gradient of {n}", g)
                grads[n].add_(g, alpha=1.0 / num_tangents)
        del v, duals, loss, primal, tangent
    return ForwardGradient(loss=torch.tensor(total_loss / num_tangents), grads=grads, jvps=jvps)


__all__ = ["exact_head_gradient"]
