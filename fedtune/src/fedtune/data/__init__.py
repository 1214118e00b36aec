"""Datasets, partitioners and the one entry point that builds a federated dataset.

``load_federated(cfg, seed)`` loads the raw dataset named by ``cfg.name`` (registered in
:data:`DATASETS`, which also resolves ``hf:<id-or-path>``), partitions it over clients with the
registered partitioner ``cfg.partition`` and splits each client's examples into
train / validation / test. Every random choice derives from ``seed``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fedtune.data import digits, hf, mnist, mnist1d, sentiment, shakespeare, synthetic, text  # noqa: F401  (register the built-in datasets and hf:<id-or-path>)
from fedtune.data.base import Batch, ClientData, DatasetInfo, Examples, FederatedDataset
from fedtune.data.partition import PARTITIONERS, partition
from fedtune.data.registry import (
    DATASET_OPTIONS,
    DATASETS,
    RawDataset,
    options_model,
    register_dataset,
)
from fedtune.errors import ConfigError, UnknownNameError
from fedtune.seeding import numpy_rng

if TYPE_CHECKING:  # fedtune.config imports this package (partition names), not the other way round
    from fedtune.config import DataConfig


def load_raw(name: str, options: dict | None = None, seed: int = 0) -> RawDataset:
    """The unpartitioned dataset ``name`` with ``options``; cached in-process.

    The returned object is shared between callers: treat its tensors as read-only.
    """
    key = json.dumps(dict(options or {}), sort_keys=True, default=str)
    return _load_raw_cached(name, key, seed)


@lru_cache(maxsize=8)
def _load_raw_cached(name: str, options_json: str, seed: int) -> RawDataset:
    try:
        loader = DATASETS.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"data.name: {err}") from None
    return loader(json.loads(options_json), seed)


def split_client(
    examples: Examples,
    index: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> ClientData:
    """Shuffle one client's examples and cut off ⌊n·val⌋ for validation and ⌊n·test⌋ for testing.

    Rounding down keeps at least one training example for every non-empty client.
    """
    order = rng.permutation(np.asarray(index, dtype=np.int64))
    n = len(order)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return ClientData(
        train=examples.subset(train), val=examples.subset(val), test=examples.subset(test)
    )


def partition_raw(raw: RawDataset, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    """Index arrays, one per client, for ``raw`` under ``cfg``'s partition (seeded)."""
    labels = (
        raw.examples.labels.numpy()
        if "labels" in raw.examples.tensors
        else np.zeros(len(raw.examples))
    )
    rng = numpy_rng(seed, "partition", cfg.partition)
    return partition(cfg.partition, labels, raw.groups, cfg.num_clients, cfg.alpha, rng)


def load_federated(cfg: DataConfig, seed: int) -> FederatedDataset:
    """Load, partition and split the dataset that ``cfg`` describes.

    Raises :class:`ConfigError` (one line naming the field) for an unknown dataset or
    option, more clients than examples, a natural partition of a dataset without
    groups, or a client left without a training example.
    """
    raw = load_raw(cfg.name, cfg.options, seed)
    parts = partition_raw(raw, cfg, seed)
    clients = []
    for client_id, index in enumerate(parts):
        data = split_client(
            raw.examples,
            index,
            cfg.val_fraction,
            cfg.test_fraction,
            numpy_rng(seed, "client-split", client_id),
        )
        if len(data.train) == 0:
            raise ConfigError(
                f"data.num_clients: client {client_id} has no training example after the "
                "validation/test split; use fewer clients or smaller val/test fractions"
            )
        clients.append(data)
    return FederatedDataset(info=raw.info, clients=clients)


__all__ = [
    "DATASETS",
    "DATASET_OPTIONS",
    "PARTITIONERS",
    "Batch",
    "ClientData",
    "DatasetInfo",
    "Examples",
    "FederatedDataset",
    "RawDataset",
    "load_federated",
    "load_raw",
    "options_model",
    "partition_raw",
    "register_dataset",
    "split_client",
]
