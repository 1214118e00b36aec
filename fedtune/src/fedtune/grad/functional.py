"""Loss closures over a model's tensors, and the context forward-mode AD needs.

Every estimator in :mod:`fedtune.grad` takes a *loss closure*: a function of a
``dict[name, Tensor]`` (the tensors to differentiate) that returns a scalar loss. The
closure puts those tensors into the model with :func:`torch.func.functional_call`, so
estimators stay pure functions of (closure, tensors, seed schedule), in the style of
``torch.func``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fedtune.data.base import Batch
from fedtune.models.base import cross_entropy

Params = Mapping[str, Tensor]
LossClosure = Callable[[Params], Tensor]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Force PyTorch's math scaled-dot-product-attention kernel.

    The fused SDPA kernels have no forward-mode derivative on CPU (DESIGN, Spry), so
    every jvp runs inside this context; models loaded with ``attn_implementation="eager"``
    do not need it, but it is harmless for them.
    """
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def dropout_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout) and restore each submodule's mode after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def model_loss(
    model: nn.Module,
    batch: Batch,
    *,
    dropout: bool = True,
    loss_chunk_size: int | None = None,
) -> LossClosure:
    """The closure ``params -> cross-entropy of model(batch)`` with ``params`` swapped in.

    Args:
        model: a fedtune model (``forward(batch) -> logits``); tensors not in ``params``
            keep their current values.
        batch: the mini-batch, with ``labels`` (-100 ignored).
        dropout: ``False`` runs every evaluation in eval mode, which zeroth-order
            estimators need (both passes of a central difference must see the same
            function; the authors' released baselines ran them with dropout on).
        loss_chunk_size: for causal LMs wrapped by :mod:`fedtune.models.hf`, compute the
            loss over this many sequence positions at a time, so the full logits (and,
            under forward AD, their tangents) never exist at once.
    """
    if loss_chunk_size is not None and not getattr(model, "supports_chunked_loss", False):
        raise ValueError(f"{type(model).__name__} does not support loss_chunk_size; use a fedtune.models.hf model")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def evaluate(params: Params) -> Tensor:
        # the model's other trainable tensors enter detached: under autograd (backprop, the exact
        # head gradient) a Spry client's share must not record the graph of tensors it does not train
        tensors = {**{n: p.detach() for n, p in trainable.items() if n not in params}, **params}
        if loss_chunk_size is not None:
            return torch.func.functional_call(
                model, tensors, (batch,), {"loss_chunk_size": loss_chunk_size}, strict=False
            )
        logits = torch.func.functional_call(model, tensors, (batch,), strict=False)
        return cross_entropy(logits, batch["labels"])

    if dropout:
        return evaluate

    def deterministic(params: Params) -> Tensor:
        with dropout_disabled(model):
            return evaluate(params)

    return deterministic


def detached(params: Params) -> dict[str, Tensor]:
    """Detached aliases of ``params`` (no copy): the primals of a jvp must not track grads."""
    return {name: p.detach() for name, p in params.items()}


def check_finite(what: str, *values: Tensor) -> None:
    """Raise a one-line error instead of letting a NaN/inf flow into an update."""
    for v in values:
        if not bool(torch.isfinite(v).all()):
            raise FloatingPointError(f"{what} is not finite ({v.detach().flatten()[:4].tolist()})")
