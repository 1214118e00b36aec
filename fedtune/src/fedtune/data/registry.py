"""The dataset registry: a name maps to a loader returning a :class:`RawDataset`.

A loader has the signature ``load(options: dict, seed: int) -> RawDataset`` and must
work offline (data shipped in packages, or generated). ``hf:<id-or-path>`` loads
Hugging Face datasets (see ``fedtune.data.hf``).

:func:`register_dataset` registers a loader together with the pydantic model of its
``data.options`` (:data:`DATASET_OPTIONS`), so the rest of fedtune can read a dataset's
option defaults without loading it: a run folder's ``config.toml`` spells them out, and
a text dataset's ``tokenizer`` option defaults to an ``hf:`` model's own
(:func:`options_model`). A loader registered with ``DATASETS.register`` alone still
works; its options are then recorded as given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions
from fedtune.errors import UnknownNameError
from fedtune.registry import Registry


@dataclass
class RawDataset:
    """All examples of a dataset before partitioning.

    ``groups`` gives each example's natural owner (writer, speaking role, ...) for the
    ``natural`` partition; ``None`` when the dataset has none.
    """

    info: DatasetInfo
    examples: Examples
    groups: np.ndarray | None = None


Loader = Callable[[dict, int], RawDataset]
DATASETS: Registry[Loader] = Registry("dataset")
DATASET_OPTIONS: Registry[type[DatasetOptions]] = Registry("dataset options")


def register_dataset(name: str, options: type[DatasetOptions]) -> Callable[[Loader], Loader]:
    """Register ``loader`` as dataset ``name`` and ``options`` as the model of its
    ``data.options`` (the one the loader passes to ``parse_options``)."""

    def decorator(loader: Loader) -> Loader:
        DATASETS.register(name)(loader)
        DATASET_OPTIONS.register(name)(options)
        return loader

    return decorator


def options_model(name: str) -> type[DatasetOptions] | None:
    """The options model registered for dataset ``name`` (``hf:`` names included), or
    None when its loader was registered without one or the name is unknown."""
    try:
        return DATASET_OPTIONS.get(name)
    except UnknownNameError:
        return None
