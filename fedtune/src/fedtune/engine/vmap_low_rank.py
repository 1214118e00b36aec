"""Clients of a round trained by SGD on a chain of linear layers, without a copy of the
weights per client: each client's weights are the global weights plus a low-rank update.

The vmap backend's general step (:mod:`fedtune.engine.vmap_backend`) holds a stacked copy of
the trainables per client and updates every copy at every step. On a CPU that step is
bound by memory: with mini-batches of 20 examples each weight read is used for 20
multiply-adds, and the update reads and writes every copy again, so batching C clients
moves C times the bytes of one sequential step and saves only Python's per-step overhead.

This module uses what FedAvg's clients share instead. A linear layer ``z = A Wᵀ + b``
with input rows A and output gradient δ = ∂L/∂z has the weight gradient ``G = δᵀ A``
(rank at most the batch size; Goodfellow 2015, "Efficient per-example gradient
computations"). SGD with momentum and weight decay (``torch.optim.SGD``: g ← ∇ + λw,
buf ← μ·buf + g, w ← w − η·buf) only adds multiples of such gradients and of the weights,
so after s steps client c's weights are

    W_c = a_c · W + Σ_{j≤s} β_{c,j} · δ_jᵀ A_j,        b_c = a_c · b + Σ_{j≤s} β_{c,j} · 1ᵀ δ_j,

W, b the round's global weights, (A_j, δ_j) the client's inputs and output gradients at
its step j, and the scalars a_c, β_{c,j} obtained by applying the optimizer's recursion to
coefficient vectors (:class:`Coefficients`). A layer's output for new inputs A is then

    A W_cᵀ + b_c = a_c · (A Wᵀ + b) + (A A_{≤s}ᵀ) diag(β) δ_{≤s} + β-weighted Σ δ_{≤s}:

one matrix product of all clients' rows with the shared W (one large GEMM, not C small
ones) plus products with the client's own few past rows. Backpropagation to the layer's
input runs through the same expression. The per-client weights are formed once, after
the last step (one batched product per layer). The results equal the sequential loop's up
to float rounding (the same sums, in another order).

It runs when the model is a registered chain (:data:`CHAINS`: linear layers and
element-wise activations), the client's objective is plain cross-entropy (FedAvg) and the
optimizer is SGD; the vmap backend uses it for the clients whose local training is short
enough that the past rows cost less than stacked copies (:func:`cheaper_than_copies`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedtune.algorithms.base import LocalParams
from fedtune.data.base import Batch
from fedtune.models.base import State
from fedtune.models.small import MLP, LogisticRegression

ELEMENTWISE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity)
"""Parameter-free layers that act on each value alone (rows of different clients never mix)."""


@dataclass(frozen=True)
class Linear:
    """One linear layer of a chain: the names of its weight and bias in the model's state."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class Chain:
    """A model as ``inputs(batch)`` followed by linear layers and element-wise activations."""

    inputs: Callable[[Batch], Tensor]  # a stacked batch (clients, examples, ...) -> (clients, examples, features)
    layers: tuple[Linear | nn.Module, ...]

    @property
    def linear(self) -> list[Linear]:
        return [layer for layer in self.layers if isinstance(layer, Linear)]

    def names(self) -> set[str]:
        return {n for layer in self.linear for n in (layer.weight, layer.bias) if n is not None}


def _chain_of(prefix: str, modules: list[tuple[str, nn.Module]], inputs: Callable[[Batch], Tensor]) -> Chain | None:
    layers: list[Linear | nn.Module] = []
    for name, module in modules:
        if isinstance(module, nn.Linear):
            layers.append(Linear(f"{prefix}{name}.weight", f"{prefix}{name}.bias" if module.bias is not None else None))
        elif isinstance(module, ELEMENTWISE):
            layers.append(module)
        else:
            return None
    return Chain(inputs, tuple(layers))


def _flat_inputs(batch: Batch) -> Tensor:
    return batch["x"].flatten(2).float()  # as MLP/LogisticRegression.forward, per client


CHAINS: dict[type[nn.Module], Callable[[nn.Module], Chain | None]] = {
    MLP: lambda m: _chain_of("net.", list(m.net.named_children()), _flat_inputs),  # type: ignore[arg-type]
    LogisticRegression: lambda m: _chain_of("", [("linear", m.linear)], _flat_inputs),  # type: ignore[arg-type]
}
"""Model classes (exact) whose forward pass is a chain this module can run, and how to read it."""


def linear_chain(model: nn.Module, trainable: set[str]) -> Chain | None:
    """The model as a :class:`Chain` whose parameters are exactly ``trainable``; None if it is none."""
    read = CHAINS.get(type(model))
    chain = read(model) if read is not None else None
    return chain if chain is not None and chain.names() == trainable else None


def runs_low_rank(params: LocalParams, objective_is_plain: bool) -> bool:
    """The optimizers and objectives whose updates are linear in gradients and weights."""
    return params.optimizer == "sgd" and objective_is_plain


def cheaper_than_copies(chain: Chain, state: State, rows: int) -> bool:
    """Whether ``rows`` past rows (a client's steps x batch size) per client cost less than
    stacked copies: per layer the rows add about rows·(in + out)/2 multiply-adds per example
    and step, a copy's step (forward, gradient, update) about 2·in·out (see the module text)."""
    sizes = [state[layer.weight].shape for layer in chain.linear]
    return rows * sum(o + i for o, i in sizes) <= 2 * sum(o * i for o, i in sizes)


class Coefficients:
    """Each client's weights and momentum buffer as coefficients on the global weights
    (column 0) and on its step-j gradients (column j), updated as ``torch.optim.SGD`` updates
    the tensors; float64, (clients, 1 + steps)."""

    def __init__(self, params: LocalParams, clients: int, steps: int, device: torch.device) -> None:
        self.params = params
        self.weights = torch.zeros(clients, 1 + steps, dtype=torch.float64, device=device)
        self.weights[:, 0] = 1
        self.momentum = torch.zeros_like(self.weights)

    def step(self, j: int, active: Tensor) -> None:
        """The update of step ``j`` (0-based; its gradient is column j + 1) for the active clients."""
        cfg = self.params
        g = self.weights * cfg.weight_decay if cfg.weight_decay else torch.zeros_like(self.weights)
        g[:, j + 1] += 1
        on = active.view(-1, 1)
        if cfg.momentum:  # buf <- μ·buf + g (from zero: the first buf is g)
            g = self.momentum * cfg.momentum + g
            self.momentum = torch.where(on, g, self.momentum)
        self.weights = torch.where(on, self.weights - cfg.lr * g, self.weights)

    def split(self, steps: int, rows_per_step: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(a, β per past row): the global weights' coefficient (clients,) and each past row's
        (clients, steps · rows_per_step), in the weights' dtype."""
        return self.weights[:, 0].to(dtype), self.weights[:, 1 : steps + 1].repeat_interleave(rows_per_step, 1).to(dtype)


class LowRankClients:
    """The clients of one group during training: their past rows per linear layer."""

    def __init__(self, chain: Chain, anchor: State, params: LocalParams, clients: int, steps: int, device: torch.device) -> None:
        self.chain, self.anchor, self.size = chain, anchor, params.batch_size
        rows = steps * self.size
        self.inputs = [torch.zeros(clients, rows, anchor[layer.weight].shape[1], device=device) for layer in chain.linear]
        self.deltas = [torch.zeros(clients, rows, anchor[layer.weight].shape[0], device=device) for layer in chain.linear]
        self.coefficients = Coefficients(params, clients, steps, device)
        self.taken = 0  # steps of the group so far

    def _mixed(self, i: int, beta: Tensor) -> Tensor:
        return self.deltas[i][:, : beta.shape[1]] * beta.unsqueeze(-1)

    def step(self, batch: Batch, valid: Tensor, loss: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
        """One SGD step of every client that has a batch (``valid``: (clients, examples), which
        padded positions are real; a client with none keeps its weights and momentum); returns
        the per-client losses ``loss(logits, labels, valid)`` before the step."""
        j, dtype = self.taken, self.anchor[self.chain.linear[0].weight].dtype
        a, beta = self.coefficients.split(j, self.size, dtype)
        inputs: list[Tensor] = []
        outputs: list[Tensor] = []
        h, i = self.chain.inputs(batch), 0
        for layer in self.chain.layers:
            if not isinstance(layer, Linear):
                h = layer(h)
                continue
            bias = self.anchor[layer.bias] if layer.bias is not None else None
            z = F.linear(h, self.anchor[layer.weight], bias) * a.view(-1, 1, 1)  # all clients' rows, one GEMM
            if j:
                mixed = self._mixed(i, beta)
                past = h @ self.inputs[i][:, : beta.shape[1]].transpose(1, 2)
                z = z + (past @ mixed + mixed.sum(1, keepdim=True) if layer.bias is not None else past @ mixed)
            if not z.requires_grad:
                z.requires_grad_()
            inputs.append(h.detach())
            outputs.append(z)
            h, i = z, i + 1
        losses = loss(h, batch["labels"], valid)
        deltas = torch.autograd.grad(losses.sum(), outputs)  # per client ∂L_c/∂z (its rows only)
        for i, (h, delta) in enumerate(zip(inputs, deltas, strict=True)):  # written after the backward pass reads them
            self.inputs[i][:, j * self.size : (j + 1) * self.size] = h
            self.deltas[i][:, j * self.size : (j + 1) * self.size] = delta
        self.coefficients.step(j, valid.any(1))
        self.taken += 1
        return losses.detach()

    def weights(self) -> State:
        """Every client's trainables after its last step, stacked (clients, ...)."""
        dtype = self.anchor[self.chain.linear[0].weight].dtype
        a, beta = self.coefficients.split(self.taken, self.size, dtype)
        out: State = {}
        for i, layer in enumerate(self.chain.linear):
            mixed = self._mixed(i, beta)
            base = self.anchor[layer.weight].unsqueeze(0) * a.view(-1, 1, 1)
            out[layer.weight] = torch.baddbmm(base, mixed.transpose(1, 2), self.inputs[i][:, : beta.shape[1]])
            if layer.bias is not None:
                out[layer.bias] = self.anchor[layer.bias].unsqueeze(0) * a.view(-1, 1) + mixed.sum(1)
        return out


__all__ = ["CHAINS", "Chain", "Coefficients", "Linear", "LowRankClients", "cheaper_than_copies", "linear_chain", "runs_low_rank"]
