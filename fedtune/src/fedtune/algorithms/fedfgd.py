"""FedFGD: federated learning with forward gradients and no weight split.

The baseline of Spry (Panchal et al., NeurIPS 2024, https://arxiv.org/abs/2405.15551,
Section 5): every client estimates the forward gradient over *all* trainable tensors,
so the estimate's variance grows with the full trainable dimension, which is what
Spry's split avoids. Local training, communication modes and the server step are
Spry's (:class:`fedtune.algorithms.spry.Spry`).
"""

from __future__ import annotations

from typing import ClassVar

from fedtune.algorithms.base import ALGORITHMS, ClientTask, LocalParams
from fedtune.algorithms.spry import ForwardGradParams, Spry
from fedtune.models.base import State


@ALGORITHMS.register("fedfgd")
class FedFGD(Spry):
    """Forward-gradient FedAvg: each client trains every trainable tensor.

    Parameters: :class:`ForwardGradParams` (num_tangents 1, tangent_distribution
    "gaussian", communication "per_epoch", optimizer "adamw", lr 1e-4, plus
    :class:`LocalParams`).
    """

    name = "fedfgd"
    Params: ClassVar[type[LocalParams]] = ForwardGradParams

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        self._tasks = {cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=list(global_state)) for cid in sampled_client_ids}
        return dict(self._tasks)
