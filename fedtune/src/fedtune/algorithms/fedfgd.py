"""FedFGD: federated learning with forward gradients and no weight split.

The baseline of Spry (Panchal et al., NeurIPS 2024, https://arxiv.org/abs/2405.15551,
Section 5): every client estimates the forward gradient over *all* trainable tensors,
so the estimate's variance grows with the full trainable dimension, which is what
Spry's split avoids. It is Spry with another grouping policy: the same client procedure
(:class:`~fedtune.algorithms.spry.EstimatedGradientClient`), communication modes and
server step, with :func:`~fedtune.algorithms.spry.everything` as the grouping.
"""

from __future__ import annotations

from typing import ClassVar

from fedtune.algorithms.base import ALGORITHMS, LocalParams
from fedtune.algorithms.spry import ForwardGradParams, Grouping, Spry, everything


@ALGORITHMS.register("fedfgd")
class FedFGD(Spry):
    """Forward-gradient FedAvg: each client trains every trainable tensor.

    Parameters: :class:`ForwardGradParams` (estimator "forward", num_tangents 1,
    tangent_distribution "gaussian", communication "per_epoch", optimizer "adamw",
    lr 1e-4, plus :class:`LocalParams`).
    """

    name = "fedfgd"
    Params: ClassVar[type[LocalParams]] = ForwardGradParams
    grouping: ClassVar[Grouping] = staticmethod(everything)
