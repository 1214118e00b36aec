"""Backpropagation: the exact gradient, the reference every estimator is compared to."""

from __future__ import annotations

import torch
from torch import Tensor

from fedtune.grad.functional import LossClosure, Params, check_finite


def backprop_gradient(loss_fn: LossClosure, params: Params) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss and its exact gradient with respect to ``params`` by reverse-mode AD.

    Stores the activations of the whole forward pass (the memory Spry avoids).
    Returns ``(loss, grads)`` with ``grads`` keyed like ``params``.
    """
    names = list(params)
    leaves = {n: params[n].detach().requires_grad_(True) for n in names}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        if loss.dim() != 0:
            raise ValueError(f"the loss closure must return a scalar, got shape {tuple(loss.shape)}")
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    check_finite("backprop loss", loss)
    out = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads, strict=True)}
    return loss.detach(), out
