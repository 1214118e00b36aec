"""FedAvg (McMahan et al., AISTATS 2017, https://arxiv.org/abs/1602.05629).

Each sampled client runs E epochs of local SGD from the global weights; the server
takes the example-weighted mean of the returned weights (Algorithm 1, FederatedAveraging),
then applies the configured server optimizer to that pseudo-gradient (FedAvg's own
optimizer with lr 1 reproduces the paper; FedAdam/FedYogi give Reddi et al.'s FedOpt).
"""

from __future__ import annotations

from fedtune.algorithms.base import ALGORITHMS, Algorithm, LocalParams


@ALGORITHMS.register("fedavg")
class FedAvg(Algorithm):
    """Federated averaging with any server optimizer; params: :class:`LocalParams`."""

    name = "fedavg"
    Params = LocalParams
