"""Server optimizers (``ServerOptimizer.step(params, delta) -> params``) and their registry."""

from fedtune.server.base import SERVER_OPTIMIZERS, FedAvgOptimizer, ServerOptimizer, new_optimizer
from fedtune.server.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from fedtune.server.flash import Flash

__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgOptimizer",
    "FedOpt",
    "FedYogi",
    "Flash",
    "ServerOptimizer",
    "new_optimizer",
]
