"""The clients' SGD, without ``torch.optim``'s start-up cost.

Every ``torch.optim`` optimizer wraps its step in ``torch._disable_dynamo``, so the first
optimizer a process builds imports TorchDynamo: about 1.3 s of CPU on this project's
machines, more than a short federated run of a small model spends in all its rounds (the
race benchmark: 30 rounds of an MLP). FedAvg-style clients mostly use plain SGD, whose
update is three tensor operations, so :class:`SGD` performs it here.

The update is ``torch.optim.SGD``'s, operation for operation (its single-tensor path, the
one it takes on CPU; no dampening, no Nesterov): with gradient g, weight decay λ, momentum
μ and learning rate η,

    g ← g + λ·w;    b ← g (first step), b ← μ·b + g (later);    w ← w − η·b  (μ > 0)
    w ← w − η·g  (μ = 0)

so runs give the same bits as with ``torch.optim.SGD`` (tested). Adam and AdamW stay
``torch.optim``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor


class LocalOptimizer(Protocol):
    """What a client's training loop needs of its optimizer (``torch.optim`` ones qualify)."""

    def step(self) -> object: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...


class SGD:
    """Stochastic gradient descent with momentum and (coupled) weight decay; see the module."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = grad.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            param.add_(grad, alpha=-self.lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()
