"""Forward gradients with tangents chosen by a guide and a variance-controlled count (FwdLLM).

FwdLLM (Xu et al., "FwdLLM: Efficient Federated Finetuning of Large Language Models with
Perturbed Inferences", USENIX ATC 2024, https://arxiv.org/abs/2308.13894) trains with
forward gradients ``g = (1/K) Σ_k (∇L·v_k) v_k`` and adds two rules:

- *discriminative perturbation sampling*: draw a pool of N candidate tangents, score each
  by its cosine similarity with the previous round's global update Δ, and use the K that
  align best. ``v`` and ``−v`` give the same estimate, so the score is ``|cos(v, Δ)|``.
  Every candidate is scored (one tensor at a time, nothing of the pool is stored) and the
  K chosen are K distinct candidates — the released code scored only the last chunk of
  the pool and reused one tangent for all K (DESIGN, Spry).
- *variance-controlled pacing*: the number of perturbations is not fixed; tangents are
  added (best-scored first) until the estimated noise-to-signal ratio of the mean falls
  to a threshold τ,
  ``tr Cov(d v) / k  ≤  τ · (‖ḡ_k‖² − tr Cov(d v) / k)``,
  with ``tr Cov = (Σ_i d_i²‖v_i‖² − k‖ḡ_k‖²) / (k − 1)`` the sample variance of one
  estimate and ``‖ḡ_k‖² − tr Cov / k`` the unbiased estimate of ``‖∇L‖²``, between
  ``K_min`` and ``K_max`` tangents. The running sums need no memory beyond the estimate
  itself. One unselected Gaussian tangent over d dimensions has a ratio of about d + 1,
  so the rule stops near k ≈ d/τ (sooner where the guide aligns the tangents). (The paper paces the number of perturbations per round at the server;
  here each client paces its own steps, which needs no extra round trip.)

Choosing tangents by a guide biases the estimate towards Δ (that is the method's point);
without a guide the ranking is the identity and the estimate is the plain forward gradient.
The chosen tangents depend on Δ, so the server cannot rebuild a step from the scalars
and the seed alone: the estimator is not replayable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedtune.grad.forward import Distribution, ForwardGradient, jvp, make_tangents, tangent
from fedtune.grad.functional import LossClosure, Params
from fedtune.seeding import Key


def alignment_scores(
    params: Mapping[str, Tensor],
    guide: Mapping[str, Tensor],
    seed: int,
    keys: Sequence[Key],
    num_candidates: int,
    distribution: Distribution = "gaussian",
) -> list[float]:
    """``|cos(v_c, guide)|`` for each candidate tangent ``c = 0..N−1`` over the tensors of ``params``.

    Candidate ``c`` is :func:`~fedtune.grad.make_tangents`'s ``k = c`` at ``keys``; each is
    regenerated tensor by tensor, so the pool is never held. Tensors of ``params`` the
    guide lacks count in ``‖v‖`` only. A zero guide scores every candidate 0.
    """
    # the tangents are drawn on the CPU (:func:`~fedtune.grad.tangent`): score them there
    reference = {n: guide[n].detach().to("cpu", torch.float64) for n in params if n in guide}
    guide_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in reference.values()))
    scores = []
    for c in range(num_candidates):
        dot, norm2 = 0.0, 0.0
        for name, p in params.items():
            v = tangent(p.shape, seed, "tangent", *keys, c, name, distribution=distribution, dtype=torch.float64)
            norm2 += float(v.pow(2).sum())
            if name in reference:
                dot += float((v * reference[name]).sum())
        scores.append(abs(dot) / math.sqrt(norm2) / guide_norm if guide_norm > 0 and norm2 > 0 else 0.0)
    return scores


def rank_candidates(
    params: Mapping[str, Tensor],
    guide: Mapping[str, Tensor] | None,
    seed: int,
    keys: Sequence[Key],
    num_candidates: int,
    distribution: Distribution = "gaussian",
) -> list[int]:
    """Candidate indices, best aligned with ``guide`` first (ties and no guide: by index)."""
    if guide is None:
        return list(range(num_candidates))
    scores = alignment_scores(params, guide, seed, keys, num_candidates, distribution)
    return sorted(range(num_candidates), key=lambda c: (-scores[c], c))


def fwdllm_gradient(
    loss_fn: LossClosure,
    params: Params,
    seed: int,
    keys: Sequence[Key],
    num_tangents: int = 1,
    distribution: Distribution = "gaussian",
    *,
    guide: Mapping[str, Tensor] | None = None,
    num_candidates: int | None = None,
    max_tangents: int | None = None,
    variance_threshold: float | None = None,
) -> ForwardGradient:
    """FwdLLM's forward gradient over ``params`` (see the module docstring).

    Args:
        loss_fn, params, seed, keys, distribution: as :func:`~fedtune.grad.forward_gradient`.
        num_tangents: K_min, the tangents always used.
        guide: the previous global update Δ (tensors keyed like ``params``); None: no selection.
        num_candidates: N, the pool scored against the guide (default K_max); N ≥ K_max.
        max_tangents: K_max (default K_min); more tangents are added only under pacing.
        variance_threshold: τ, the noise-to-signal ratio of the mean at which pacing stops;
            None: always K_max tangents.

    Returns a :class:`~fedtune.grad.ForwardGradient` whose ``jvps`` holds the k ≤ K_max
    directional derivatives actually used, in the order taken.
    """
    k_max = num_tangents if max_tangents is None else max_tangents
    pool = k_max if num_candidates is None else num_candidates
    if num_tangents < 1 or k_max < num_tangents:
        raise ValueError(f"need 1 <= num_tangents <= max_tangents, got {num_tangents} and {k_max}")
    if pool < k_max:
        raise ValueError(f"num_candidates ({pool}) must be at least max_tangents ({k_max})")
    if variance_threshold is not None and variance_threshold <= 0:
        raise ValueError(f"variance_threshold must be positive, got {variance_threshold}")
    if not params:
        raise ValueError("fwdllm_gradient needs at least one tensor to differentiate")
    order = rank_candidates(params, guide, seed, keys, pool, distribution)[:k_max]
    total = {name: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for name, p in params.items()}
    scalars: list[float] = []
    sum_sq, total_loss = 0.0, 0.0
    for c in order:
        v = make_tangents(params, seed, keys, c, distribution)
        loss, d = jvp(loss_fn, params, v)
        value = float(d)
        scalars.append(value)
        total_loss += float(loss)
        for name, g in total.items():
            g.add_(v[name], alpha=value)
        sum_sq += value * value * sum(float(t.double().pow(2).sum()) for t in v.values())
        del v
        k = len(scalars)
        if variance_threshold is not None and k >= max(num_tangents, 2) and k < k_max:
            mean_sq = sum(float(g.double().pow(2).sum()) for g in total.values()) / k**2
            noise = max(sum_sq - k * mean_sq, 0.0) / (k - 1) / k  # tr Cov / k: variance of the mean
            signal = mean_sq - noise  # unbiased estimate of ‖∇L‖²
            if signal > 0 and noise <= variance_threshold * signal:
                break
    k = len(scalars)
    grads = {name: g.div_(k) for name, g in total.items()}
    return ForwardGradient(loss=torch.tensor(total_loss / k), grads=grads, jvps=torch.tensor(scalars, dtype=torch.float32))
