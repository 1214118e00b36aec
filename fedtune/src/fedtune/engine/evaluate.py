"""One evaluation protocol for every method (DESIGN, Spry section).

- generalized: the global model on the pooled held-out test data of the clients;
- personalized: for a seeded sample of clients, the global model finetuned on the
  client's training split with the same plain-SGD budget for every method, then
  measured on that client's test split (example-weighted mean).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedtune.config import EvalConfig
from fedtune.data.base import ClientData, Examples
from fedtune.models.base import State, evaluate, loss_fn, set_trainable
from fedtune.seeding import numpy_rng, torch_generator


def generalized(model: nn.Module, state: State, test: Examples, cfg: EvalConfig) -> dict[str, float]:
    set_trainable(model, state)
    if cfg.max_examples is not None and len(test) > cfg.max_examples:
        test = test.subset(list(range(cfg.max_examples)))
    return {f"test_{k}": v for k, v in evaluate(model, test, cfg.batch_size).items()}


def personalized(
    model: nn.Module,
    state: State,
    num_clients: int,
    client_data: Callable[[int], ClientData],
    cfg: EvalConfig,
    batch_size: int,
    seed: int,
    round: int,
) -> dict[str, float]:
    """Mean test accuracy after ``cfg.finetune_epochs`` of local SGD from the global model."""
    rng = numpy_rng(seed, "personalized-clients")
    chosen = sorted(rng.choice(num_clients, size=min(cfg.personalized_clients, num_clients), replace=False).tolist())
    params = [p for p in model.parameters() if p.requires_grad]
    correct = total = 0.0
    for cid in chosen:
        data = client_data(cid)
        if len(data.test) == 0:
            continue
        set_trainable(model, state)
        optimizer = torch.optim.SGD(params, lr=cfg.finetune_lr)
        model.train()
        for epoch in range(cfg.finetune_epochs):
            for batch in data.train.batches(batch_size, torch_generator(seed, "finetune", round, cid, epoch)):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model, batch).backward()
                optimizer.step()
        scores = evaluate(model, data.test, cfg.batch_size)
        n = len(data.test)
        correct += scores.get("accuracy", 0.0) * n
        total += n
    set_trainable(model, state)
    return {"personalized_accuracy": correct / total} if total else {}
