"""FedSGD (McMahan et al. 2017, the C=1/E=1/B=∞ baseline of FedAvg).

Each client computes the gradient of its loss over all its training examples at the
global weights, accumulated batch by batch with correct example weights (no aliasing:
each client's gradient counts once), and returns w - lr·g. With the FedAvg server
optimizer this is one step of large-batch SGD per round.
"""

from __future__ import annotations

import torch

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, ClientTask, LocalParams
from fedtune.models.base import get_trainable, loss_fn, set_trainable, state_bytes


@ALGORITHMS.register("fedsgd")
class FedSGD(Algorithm):
    """One full-local-data gradient step per client per round."""

    name = "fedsgd"
    Params = LocalParams

    def client_update(self, model, trainable, data, task: ClientTask) -> ClientResult:
        set_trainable(model, trainable)
        model.train()
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for p in params.values():
            p.grad = None
        n_total, total = len(data.train), 0.0
        for batch in data.train.batches(self.params.batch_size):
            value = loss_fn(model, batch) * (len(batch["labels"]) / n_total)
            value.backward()
            total += float(value)
        with torch.no_grad():
            for p in params.values():
                if p.grad is not None:
                    p -= self.params.lr * p.grad
        tensors = get_trainable(model)
        return ClientResult(task.client_id, n_total, tensors, {"loss": total, "steps": 1, "epochs": 1}, state_bytes(tensors))
