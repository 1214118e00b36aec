"""Federated algorithms, one per module, looked up by name in ``ALGORITHMS``."""

from fedtune.algorithms import (  # noqa: F401  (registration)
    baffle,
    fedavg,
    fedfgd,
    fedmezo,
    fedprox,
    fedsgd,
    flash,
    flow,
    fwdllm,
    spry,
)
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
