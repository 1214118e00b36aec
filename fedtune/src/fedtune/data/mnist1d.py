"""``mnist1d``: MNIST-1D, generated here from its ten 1-D digit templates.

Greydanus and Kobak, "Scaling Down Deep Learning with MNIST-1D" (ICML 2024,
https://arxiv.org/abs/2011.14439). Each example is one of ten hand-drawn 1-D templates
(a digit's silhouette, 12 points) padded, translated, scaled, sheared, blurred with
correlated noise and subsampled to 40 points; a linear classifier reaches about 32 %,
an MLP about 70 % on the package's default 5,000 examples, so the task is far from
trivial at a size that trains in seconds on a CPU.

The examples come from the ``mnist1d`` package's ``make_dataset(get_dataset_args())``
run locally (its ``get_dataset()`` downloads a pickle instead; it is never called). The
package's train/test split is pooled into one set of ``num_samples`` examples that the
partitioner splits over clients; ``x`` has shape (N, 40), standardised by the generator
to mean 0 and standard deviation 1. There are no natural groups.

Options: ``num_samples`` (default 10,000; a multiple of 10 keeps the classes balanced),
``generator_seed`` (the package's own seed, 42 by default, as in the paper's dataset)
and the noise scales of the generator (``corr_noise_scale``, ``iid_noise_scale``).
The generator seeds Python's and NumPy's global generators; their states are restored
afterwards so that loading the data does not change any other random draw.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from pydantic import Field

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset

SEQUENCE_LENGTH = 40  # the package's final_seq_length
NUM_CLASSES = 10


class MNIST1DOptions(DatasetOptions):
    """Options of ``mnist1d`` (defaults: the package's generator with 10,000 examples)."""

    num_samples: int = Field(10_000, ge=10, description="examples generated (pooled train and test)")
    generator_seed: int = Field(42, ge=0, description="seed of the mnist1d generator (42: the published dataset's)")
    corr_noise_scale: float = Field(0.25, ge=0, description="scale of the generator's correlated (smoothed) noise")
    iid_noise_scale: float = Field(2e-2, ge=0, description="scale of the generator's per-point noise")


def generate_mnist1d(opts: MNIST1DOptions) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, 40) float32 and labels (N,) int64 from ``mnist1d.data.make_dataset``."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = opts.num_samples
    args.seed = opts.generator_seed
    args.corr_noise_scale = opts.corr_noise_scale
    args.iid_noise_scale = opts.iid_noise_scale
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y


@register_dataset("mnist1d", MNIST1DOptions)
def load_mnist1d(options: dict, seed: int) -> RawDataset:
    """MNIST-1D, 40-point 1-D digits generated locally (Greydanus and Kobak 2024).

    Options: ``num_samples``, ``generator_seed``, ``corr_noise_scale``, ``iid_noise_scale``.
    """
    opts = parse_options(MNIST1DOptions, options, "mnist1d")
    x, y = generate_mnist1d(opts)
    info = DatasetInfo(
        name="mnist1d",
        task="classification",
        num_classes=NUM_CLASSES,
        input_shape=(SEQUENCE_LENGTH,),
        class_names=[str(d) for d in range(NUM_CLASSES)],
    )
    examples = Examples({"x": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    return RawDataset(info=info, examples=examples, groups=None)
