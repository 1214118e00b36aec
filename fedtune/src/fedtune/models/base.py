"""Conventions every model in the registry follows.

A model is an ``nn.Module`` whose ``forward(batch)`` returns logits: shape (B, C) for
classification, (B, T, V) for sequence tasks. The loss is cross-entropy over the last
dimension with label -100 ignored. The trainable state is the parameters with
``requires_grad``; only those tensors travel between server and clients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedtune.data.base import Batch

State = dict[str, Tensor]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over all non-ignored positions (classification or sequence)."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100)


def loss_fn(model: nn.Module, batch: Batch) -> Tensor:
    return cross_entropy(model(batch), batch["labels"])


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def get_trainable(model: nn.Module) -> State:
    """Detached copies of the trainable tensors (what a client sends or receives)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def set_trainable(model: nn.Module, state: State) -> None:
    """Copy ``state`` into the model's parameters of the same names."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def state_bytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@torch.no_grad()
def evaluate(model: nn.Module, examples, batch_size: int = 256) -> dict[str, float]:
    """Loss and accuracy (over non-ignored labels) of ``model`` on ``examples``."""
    was_training = model.training
    model.eval()
    if "attention_mask" in examples.tensors:  # similar lengths together: a batch's padding is trimmed (hf.trim_padding)
        examples = examples.subset(torch.argsort(examples.tensors["attention_mask"].sum(-1), stable=True))
    total_loss, correct, count = 0.0, 0, 0
    for batch in examples.batches(batch_size):
        logits = model(batch)
        labels = batch["labels"].flatten()
        flat = logits.flatten(0, -2).float()
        mask = labels != -100
        n = int(mask.sum())
        if n == 0:
            continue
        total_loss += float(F.cross_entropy(flat[mask], labels[mask], reduction="sum"))
        correct += int((flat[mask].argmax(-1) == labels[mask]).sum())
        count += n
    model.train(was_training)
    if count == 0:
        return {}
    return {"loss": total_loss / count, "accuracy": correct / count}
