"""The dataset registry: a name maps to a loader returning a :class:`RawDataset`.

A loader has the signature ``load(options: dict, seed: int) -> RawDataset`` and must
work offline (data shipped in packages, or generated). ``hf:<id-or-path>`` loads
Hugging Face datasets (see ``fedtune.data.hf``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedtune.data.base import DatasetInfo, Examples
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
