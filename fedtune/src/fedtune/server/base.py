"""Server optimizers: turn the aggregated pseudo-gradient into new global weights.

``delta`` is the (example-weighted) mean of the client tensors minus the current
global tensors, so FedAvg is ``params + delta``. Every optimizer keeps its state per
tensor name, so optimizers also work when a round updates only some tensors (Spry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from fedtune.registry import Registry

State = dict[str, Tensor]

SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer")


class ServerOptimizer(ABC):
    """``step(params, delta) -> params``; holds whatever state the update needs."""

    @abstractmethod
    def step(self, params: State, delta: State) -> State:
        """New values of the tensors named in ``delta`` (others are left out)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def round_metrics(self) -> dict[str, float]:
        """Diagnostics of the last step, written to the round's metrics."""
        return {}


@SERVER_OPTIMIZERS.register("fedavg")
class FedAvgOptimizer(ServerOptimizer):
    """FedAvg's server step (McMahan et al. 2017): ``x + lr * delta`` (lr 1.0 by default).

    Parameters
    ----------
    lr : float, default 1.0
        Server learning rate; 1.0 replaces the model by the clients' mean.
    """

    def __init__(self, lr: float = 1.0) -> None:
        self.lr = lr

    def step(self, params: State, delta: State) -> State:
        return {k: params[k] + self.lr * d for k, d in delta.items()}


def new_optimizer(name: str, **kwargs) -> ServerOptimizer:
    """Build a registered server optimizer by name, e.g. ``new_optimizer("fedyogi", lr=1e-2)``."""
    return SERVER_OPTIMIZERS.get(name)(**kwargs)


def _to_cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}

