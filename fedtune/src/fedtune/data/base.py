"""Containers for federated data: examples as named tensors, split per client.

A batch is a ``dict[str, Tensor]``: ``{"x", "labels"}`` for small models,
``{"input_ids", "attention_mask", "labels"}`` for language models. Labels equal to
-100 are ignored by the loss (padding in language modelling).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

Batch = dict[str, Tensor]


@dataclass
class Examples:
    """A set of examples held as tensors that share their first dimension."""

    tensors: dict[str, Tensor]

    def __post_init__(self) -> None:
        sizes = {k: len(v) for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"tensors of one Examples differ in length: {sizes}")

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values()))) if self.tensors else 0

    @property
    def labels(self) -> Tensor:
        return self.tensors["labels"]

    def subset(self, index: Tensor | list[int]) -> Examples:
        index = torch.as_tensor(index, dtype=torch.long)
        return Examples({k: v[index] for k, v in self.tensors.items()})

    def to(self, device: str | torch.device) -> Examples:
        """The same examples on ``device`` (no copy when they are there already)."""
        return Examples({k: v.to(device) for k, v in self.tensors.items()})

    def map(self, fn) -> Examples:
        """A new Examples with ``fn(tensors) -> tensors`` applied (e.g. a drift)."""
        return Examples(fn(dict(self.tensors)))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        """Mini-batches; shuffled when a generator is given, in order otherwise."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Examples({})
        return Examples({k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors})


@dataclass
class ClientData:
    """One client's examples, split into train / validation / test."""

    train: Examples
    val: Examples
    test: Examples

    @property
    def num_examples(self) -> int:
        return len(self.train)

    def to(self, device: str | torch.device) -> ClientData:
        return ClientData(self.train.to(device), self.val.to(device), self.test.to(device))


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset to be built for it."""

    name: str
    task: str  # "classification" or "causal_lm"
    num_classes: int  # vocabulary size for causal_lm / next-character tasks
    input_shape: tuple[int, ...] = ()  # per-example shape of "x" for small models
    class_names: list[str] | None = None
    tokenizer: object | None = None  # a transformers tokenizer for text datasets
    extra: dict = field(default_factory=dict)


@dataclass
class FederatedDataset:
    """A dataset partitioned over clients; client ids are 0..N-1."""

    info: DatasetInfo
    clients: list[ClientData]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def pooled(self, split: str) -> Examples:
        """All clients' examples of one split, concatenated in client order."""
        return Examples.concat([getattr(c, split) for c in self.clients])
