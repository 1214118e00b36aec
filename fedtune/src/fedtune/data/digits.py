"""``digits``: scikit-learn's 1,797 handwritten 8x8 digits (UCI optical recognition set).

Alpaydin and Kaynak (1998), shipped as ``sklearn.datasets.load_digits``. Pixel values
0..16 are scaled to [0, 1]; ``x`` has shape (N, 1, 8, 8). No natural groups.
"""

from __future__ import annotations

import numpy as np
import torch

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import NoOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset


@register_dataset("digits", NoOptions)
def load_digits(options: dict, seed: int) -> RawDataset:
    """UCI handwritten 8x8 digits from scikit-learn (1,797 images); no options."""
    parse_options(NoOptions, options, "digits")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float32).reshape(-1, 1, 8, 8) / 16.0
    info = DatasetInfo(
        name="digits",
        task="classification",
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(d) for d in range(10)],
    )
    examples = Examples(
        {
            "x": torch.from_numpy(x),
            "labels": torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        }
    )
    return RawDataset(info=info, examples=examples, groups=None)
