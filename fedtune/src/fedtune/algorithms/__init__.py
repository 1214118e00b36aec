"""Federated algorithms, one per module, looked up by name in ``ALGORITHMS``."""

from fedtune.algorithms import (  # noqa: F401  (registration)
    apfl,
    baffle,
    ditto,
    fedavg,
    fedfgd,
    fedmezo,
    fedprox,
    fedrep,
    fedsgd,
    flash,
    flow,
    fwdllm,
    lg_fedavg,
    local,
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
