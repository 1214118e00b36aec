"""Gradient estimators by name: what a client procedure is given to estimate its gradient.

An estimator is a pure function ``(loss_fn, params, seed, keys, num_samples, distribution)
-> ForwardGradient``; registering one here (a function and a name) makes it available to
every algorithm whose client trains with estimated gradients (Spry, FedFGD).

- ``forward``: forward gradients, K jvps (Baydin et al. 2022; Spry's client).
- ``spsa``: two-point central differences, K perturbations (Spall 1992; MeZO).
- ``backprop``: the exact gradient (one backward pass; the reference).
- ``mezo``: SPSA with ε = 1e-3 and MeZO's in-place, regenerated perturbations (Malladi
  et al. 2023; FedMeZO's client).
- ``baffle``: K central differences with σ = 1e-4, divided by 2σ (Feng et al. 2023; BAFFLE).
- ``fwdllm``: forward gradients with guide-selected tangents and a paced count (Xu et al.
  2024; FwdLLM). Called through the registry it has no guide and is the forward gradient;
  FwdLLM's client binds the guide its task carries. Not replayable: the tangents it picks
  depend on the guide, not on the seed alone.

``replayable`` estimators produce ``(1/K) Σ_k d_k v_k`` with tangents ``v_k`` regenerated
from the seed schedule, so a server holding the K scalars ``d_k`` of a step can rebuild
the estimate exactly (Spry's per-iteration communication); ``backprop`` cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fedtune.grad.backprop import backprop_gradient
from fedtune.grad.forward import Distribution, ForwardGradient, forward_gradient
from fedtune.grad.functional import LossClosure, Params
from fedtune.grad.guided import fwdllm_gradient
from fedtune.grad.zeroth import mezo_gradient, spsa_gradient
from fedtune.registry import Registry
from fedtune.seeding import Key

EstimateFn = Callable[[LossClosure, Params, int, Sequence[Key], int, Distribution], ForwardGradient]


@dataclass(frozen=True)
class Estimator:
    """A gradient estimator and what a client procedure needs to know about it.

    Attributes:
        estimate: ``(loss_fn, params, seed, keys, num_samples, distribution) -> ForwardGradient``.
        replayable: the estimate is ``(1/K) Σ d_k v_k`` with seeded tangents, so it can be
            sent as the K scalars ``d_k`` and rebuilt by the server.
        description: one line for ``--help`` texts and error messages.
    """

    estimate: EstimateFn
    replayable: bool
    description: str


ESTIMATORS: Registry[Estimator] = Registry("gradient estimator")


def register_estimator(name: str, *, replayable: bool, description: str) -> Callable[[EstimateFn], EstimateFn]:
    """Decorator: register ``fn`` as the estimator ``name``."""

    def decorator(fn: EstimateFn) -> EstimateFn:
        ESTIMATORS.register(name)(Estimator(fn, replayable, description))
        return fn

    return decorator


@register_estimator("forward", replayable=True, description="forward gradient: K jvps, (1/K) Σ (∇L·v_k) v_k")
def _forward(loss_fn, params, seed, keys, num_samples, distribution):
    return forward_gradient(loss_fn, params, seed, keys, num_samples, distribution)


@register_estimator("spsa", replayable=True, description="central differences: K pairs of loss evaluations (SPSA, MeZO)")
def _spsa(loss_fn, params, seed, keys, num_samples, distribution, sigma: float = 1e-3):
    return spsa_gradient(loss_fn, params, seed, keys, num_samples, sigma, distribution)


@register_estimator("backprop", replayable=False, description="exact gradient by backpropagation (stores activations)")
def _backprop(loss_fn, params, seed, keys, num_samples, distribution):
    loss, grads = backprop_gradient(loss_fn, params)
    return ForwardGradient(loss=loss, grads=grads, jvps=torch.empty(0))


MEZO_EPS = 1e-3  # MeZO's ε (Malladi et al. 2023, Section 2 and their released defaults)
BAFFLE_SIGMA = 1e-4  # BAFFLE's perturbation scale (Feng et al. 2023)


@register_estimator("mezo", replayable=True, description="MeZO: central differences with ε=1e-3, perturbed in place from the seed")
def _mezo(loss_fn, params, seed, keys, num_samples, distribution):
    return mezo_gradient(loss_fn, params, seed, keys, num_samples, MEZO_EPS, distribution)


@register_estimator("baffle", replayable=True, description="BAFFLE: K central differences (L(θ+σv)−L(θ−σv))/(2σ), σ=1e-4")
def _baffle(loss_fn, params, seed, keys, num_samples, distribution):
    return spsa_gradient(loss_fn, params, seed, keys, num_samples, BAFFLE_SIGMA, distribution)


@register_estimator("fwdllm", replayable=False, description="FwdLLM: forward gradients on guide-selected tangents, paced K")
def _fwdllm(loss_fn, params, seed, keys, num_samples, distribution):
    return fwdllm_gradient(loss_fn, params, seed, keys, num_samples, distribution)
