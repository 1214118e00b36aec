"""Federated algorithms, one per module, looked up by name in ``ALGORITHMS``."""

from fedtune.algorithms import baffle, fedavg, fedfgd, fedmezo, fedprox, fedsgd, flash, fwdllm, spry  # noqa: F401  (registration)
from fedtune.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    Client,
    ClientResult,
    ClientState,
    ClientTask,
    LocalParams,
)

__all__ = ["ALGORITHMS", "Algorithm", "Client", "ClientResult", "ClientState", "ClientTask", "LocalParams"]
