"""FedSGD (McMahan et al. 2017, the C=1/E=1/B=∞ baseline of FedAvg).

Each client computes the gradient of its loss over all its training examples at the
global weights, accumulated batch by batch with correct example weights (no aliasing:
each client's gradient counts once), and returns w - lr·g. With the FedAvg server
optimizer this is one step of large-batch SGD per round.
"""

from __future__ import annotations

import torch

from fedtune.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    Client,
    ClientResult,
    ClientState,
    ClientTask,
    LocalParams,
)
from fedtune.models.base import get_trainable, loss_fn, set_trainable, state_bytes


class FedSGDClient(Client):
    """The gradient of the client's whole training loss at the global weights, one step."""

    def fit(self, model, global_state, data, task: ClientTask, state: ClientState | None = None) -> tuple[ClientResult, None]:
        set_trainable(model, global_state)
        model.train()
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for p in params.values():
            p.grad = None
        n_total, total = len(data.train), 0.0
        for batch in data.train.batches(self.params.batch_size):
            value = loss_fn(model, batch) * (len(batch["labels"]) / n_total)
            value.backward()
            total += float(value.detach())
        with torch.no_grad():
            for p in params.values():
                if p.grad is not None:
                    p -= self.params.lr * p.grad
        tensors = get_trainable(model)
        result = ClientResult(task.client_id, n_total, tensors, {"loss": total, "steps": 1, "epochs": 1}, state_bytes(tensors))
        return result, None


@ALGORITHMS.register("fedsgd")
class FedSGD(Algorithm):
    """FedAvg's server with :class:`FedSGDClient` clients: one full-data gradient step each."""

    name = "fedsgd"
    Params = LocalParams
    Client = FedSGDClient
