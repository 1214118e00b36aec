"""Server optimizers (``ServerOptimizer.step(params, delta) -> params``) and their registry."""

from fedtune.server.base import (
    SERVER_OPTIMIZERS,
    FedAvgOptimizer,
    FedAvgParams,
    ServerOptimizer,
    ServerParams,
    State,
    new_optimizer,
    to_cpu,
)
from fedtune.server.fedopt import FedAdagrad, FedAdam, FedOpt, FedOptParams, FedYogi
from fedtune.server.flash import Flash, FlashParams
from fedtune.server.flash_reset import FlashReset, FlashResetParams

__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgOptimizer",
    "FedAvgParams",
    "FedOpt",
    "FedOptParams",
    "FedYogi",
    "Flash",
    "FlashParams",
    "FlashReset",
    "FlashResetParams",
    "ServerOptimizer",
    "ServerParams",
    "State",
    "new_optimizer",
    "to_cpu",
]
