"""One evaluation protocol for every method (DESIGN, Spry section).

- generalized: the global model on the pooled held-out test data of the clients;
- personalized: for a seeded sample of clients (the same for every method), each
  client's personalized model on its own test split, and the global model on the same
  split; the personalized model is the method's own (Flow, Ditto, APFL, FedRep,
  LG-FedAvg, local training) or, for the others, the global model finetuned on the
  client's training split with the same plain-SGD budget (FedAvg + finetuning).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedtune.config import EvalConfig
from fedtune.data.base import ClientData, Examples
from fedtune.errors import RunError
from fedtune.models.base import State, evaluate, loss_fn, set_trainable
from fedtune.optim import SGD
from fedtune.seeding import numpy_rng, torch_generator


def generalized(model: nn.Module, state: State, test: Examples, cfg: EvalConfig) -> dict[str, float]:
    set_trainable(model, state)
    if cfg.max_examples is not None and len(test) > cfg.max_examples:
        test = test.subset(list(range(cfg.max_examples)))
    return {f"test_{k}": v for k, v in evaluate(model, test, cfg.batch_size).items()}


Personalize = Callable[[int, ClientData], tuple[nn.Module, dict[str, float]]]
"""``(client id, its data) -> (its personalized model, per-client figures)``: a method's own personalization."""


def personalized_clients(seed: int, num_clients: int, cfg: EvalConfig) -> list[int]:
    """The clients every evaluation measures: a seeded sample, the same for every method and round."""
    rng = numpy_rng(seed, "personalized-clients")
    return sorted(rng.choice(num_clients, size=min(cfg.personalized_clients, num_clients), replace=False).tolist())


def finetuned(model: nn.Module, data: ClientData, cfg: EvalConfig, batch_size: int, seed: int, round: int, cid: int) -> nn.Module:
    """FedAvg + finetuning: ``cfg.finetune_epochs`` of plain SGD on the client's training split."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(params, lr=cfg.finetune_lr)
    model.train()
    for epoch in range(cfg.finetune_epochs):
        for batch in data.train.batches(batch_size, torch_generator(seed, "finetune", round, cid, epoch)):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            optimizer.step()
    return model


def personalized(
    model: nn.Module,
    state: State,
    num_clients: int,
    client_data: Callable[[int], ClientData],
    cfg: EvalConfig,
    batch_size: int,
    seed: int,
    round: int,
    personalize: Personalize | None = None,
    global_model: Callable[[nn.Module, State], nn.Module] | None = None,
) -> dict[str, float]:
    """Each sampled client's personalized model and the global model on its own test split.

    The personalized model is the method's own (``personalize``) or, without one, the
    global model after ``cfg.finetune_epochs`` of local SGD (FedAvg + finetuning).
    Returns example-weighted mean accuracies (``personalized_accuracy``,
    ``personalized_global_accuracy``), the fraction of clients whose personalized
    accuracy is below the global model's (``personalized_harmed``) and the
    example-weighted mean of each per-client figure ``personalize`` gives.
    ``global_model(model, state)``: the global model to compare with (default: ``model``
    with ``state``; Flow's is its pure global path).
    """
    correct = correct_global = total = 0.0
    harmed = clients = 0
    extras: dict[str, float] = {}
    for cid in personalized_clients(seed, num_clients, cfg):
        data = client_data(cid)
        if len(data.test) == 0:
            continue
        if global_model is None:
            set_trainable(model, state)
        view = model if global_model is None else global_model(model, state)
        accuracy_global = evaluate(view, data.test, cfg.batch_size).get("accuracy", 0.0)
        try:
            if personalize is None:
                own, figures = finetuned(model, data, cfg, batch_size, seed, round, cid), {}
            else:
                own, figures = personalize(cid, data)
        except FloatingPointError as err:  # a figure that leaves a client out would mislead: stop, naming it
            raise RunError(f"round {round}: client {cid}'s personalized model for evaluation: {err}; lower its lr") from err
        accuracy = evaluate(own, data.test, cfg.batch_size).get("accuracy", 0.0)
        n = len(data.test)
        correct += accuracy * n
        correct_global += accuracy_global * n
        total += n
        clients += 1
        harmed += accuracy < accuracy_global
        for key, value in figures.items():
            extras[key] = extras.get(key, 0.0) + value * n
    if global_model is None:
        set_trainable(model, state)
    else:
        global_model(model, state)
    if not total:
        return {}
    out = {
        "personalized_accuracy": correct / total,
        "personalized_global_accuracy": correct_global / total,
        "personalized_harmed": harmed / clients,
    }
    out.update({f"personalized_{k}": v / total for k, v in extras.items()})
    return out
