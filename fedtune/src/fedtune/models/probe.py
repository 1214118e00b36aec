"""A warm head: a federated linear probe on the frozen model's features.

Forward-gradient finetuning (Spry, Panchal et al., NeurIPS 2024, arXiv 2405.15551) from
a randomly initialized task head spends its estimates on the head, which holds nearly all
of the gradient's norm. A short federated linear probe first trains the head alone, by
backprop, with the rest of the model frozen; every method of a comparison then starts
from the same head (``model.options.head_init``, :func:`fedtune.models.hf.load_head`).

With the body frozen and dropout off the head's input features of an example never
change, so each client computes them once (one forward pass over its training split,
the memory of inference) and trains the head on them: FedAvg rounds of ``clients_per_round``
sampled clients (:func:`fedtune.engine.sampling.sample_clients`), each ``local_epochs`` of
AdamW on its features, aggregated by the example-weighted mean. This equals training the
head through the frozen model in evaluation mode, at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from fedtune.data.base import Examples, FederatedDataset
from fedtune.models.base import State, cross_entropy
from fedtune.seeding import torch_generator


@dataclass(frozen=True)
class ProbeResult:
    """The probe's head (full parameter names) and its accuracy on the pooled test split per round."""

    head: State
    test_accuracy: list[float]


def _head_module(model: nn.Module, head_names: list[str]) -> tuple[nn.Module, dict[str, str]]:
    """The module holding every head tensor, and full name -> name inside it."""
    owners = {name.rsplit(".", 1)[0] for name in head_names}
    if len(owners) != 1:
        raise ValueError(f"the head's tensors belong to several modules ({sorted(owners)}); a linear probe needs one")
    (owner,) = owners
    return model.get_submodule(owner), {name: name.rsplit(".", 1)[1] for name in head_names}


@torch.no_grad()
def head_features(model: nn.Module, module: nn.Module, examples: Examples, batch_size: int = 128) -> Tensor:
    """The inputs of ``module`` (the head) for every example, in evaluation mode."""
    captured: list[Tensor] = []
    hook = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    try:
        for batch in examples.batches(batch_size):
            model(batch)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured) if captured else torch.empty(0)


def federated_linear_probe(
    model: nn.Module,
    fed: FederatedDataset,
    *,
    rounds: int,
    clients_per_round: int,
    lr: float,
    seed: int,
    local_epochs: int = 1,
    batch_size: int = 8,
) -> ProbeResult:
    """Train ``model``'s head (``model.head_names``) by FedAvg on the frozen features; see the module docstring."""
    from fedtune.engine.sampling import sample_clients

    names = list(getattr(model, "head_names", []))
    if not names:
        raise ValueError("the model has no trainable head to probe")
    module, local = _head_module(model, names)
    params = dict(model.named_parameters())
    state = {n: params[n].detach().clone() for n in names}
    feats = [head_features(model, module, c.train) for c in fed.clients]
    labels = [c.train.labels for c in fed.clients]
    test = fed.pooled("test")
    test_x, test_y = head_features(model, module, test), test.labels

    def logits(head: State, x: Tensor) -> Tensor:
        return torch.func.functional_call(module, {local[n]: t for n, t in head.items()}, (x,))

    accuracy: list[float] = []
    for rnd in range(1, rounds + 1):
        sums = {n: torch.zeros_like(t) for n, t in state.items()}
        total = 0
        for cid in sample_clients(seed, rnd, fed.num_clients, clients_per_round):
            head = {n: t.clone().requires_grad_(True) for n, t in state.items()}
            optimizer = torch.optim.AdamW(list(head.values()), lr=lr, weight_decay=0.0)
            x, y = feats[cid], labels[cid]
            for epoch in range(local_epochs):
                order = torch.randperm(len(y), generator=torch_generator(seed, "probe-batches", rnd, cid, epoch))
                for start in range(0, len(y), batch_size):
                    idx = order[start : start + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    cross_entropy(logits(head, x[idx]), y[idx]).backward()
                    optimizer.step()
            for n in sums:
                sums[n].add_(head[n].detach(), alpha=len(y))
            total += len(y)
        state = {n: sums[n] / total for n in sums}
        with torch.no_grad():
            accuracy.append(float((logits(state, test_x).argmax(-1) == test_y).float().mean()) if len(test_y) else float("nan"))
    return ProbeResult(head=state, test_accuracy=accuracy)


def save_head(result: ProbeResult, path: str | Path) -> Path:
    """Write the head as ``{"global_state": {name: tensor}}``, the file ``head_init`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_state": result.head, "test_accuracy": result.test_accuracy}, path)
    return path


__all__ = ["ProbeResult", "federated_linear_probe", "head_features", "save_head"]
