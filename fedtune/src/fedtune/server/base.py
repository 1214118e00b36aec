"""Server optimizers: turn the aggregated pseudo-gradient into new global weights.

``delta`` is the (example-weighted) mean of the client tensors minus the current
global tensors, so FedAvg is ``params + delta``. Every optimizer keeps its state per
tensor name, so optimizers also work when a round updates only some tensors (Spry).

Like an algorithm, a server optimizer declares its hyperparameters as a pydantic model
(``Params``, with a description per field); the experiment's ``[server]`` table is
validated against it, and ``FedYogi(lr=0.03)``, ``FedYogi(FedOptParams(lr=0.03))`` and
``new_optimizer("fedyogi", lr=0.03)`` all go through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from fedtune.errors import ConfigError, format_validation_error
from fedtune.registry import Registry

State = dict[str, Tensor]

SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer")


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be positive, got {value}")
    return value


def _decay(value: float) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"must lie in [0, 1), got {value}")
    return value


Positive = Annotated[float, AfterValidator(_positive)]
Decay = Annotated[float, AfterValidator(_decay)]  # a moment's decay rate β, in [0, 1)


class ServerParams(BaseModel):
    """Base of a server optimizer's hyperparameters (the ``[server]`` table without
    ``name``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerOptimizer(ABC):
    """``step(params, delta) -> params``; holds whatever state the update needs.

    Parameters
    ----------
    params : Params | None
        The hyperparameters; ``None`` takes ``Params``' defaults.
    **overrides
        Hyperparameters by name, replacing those of ``params`` (``FedYogi(lr=0.03)``).
        Everything is validated by ``Params``: a bad or unknown value raises a
        one-line :class:`~fedtune.errors.ConfigError` naming ``server.<field>``.
    """

    Params: ClassVar[type[ServerParams]] = ServerParams

    def __init__(self, params: ServerParams | None = None, **overrides: Any) -> None:
        self.params = self.parse_params(params, overrides)

    @classmethod
    def parse_params(cls, params: ServerParams | None = None, overrides: dict[str, Any] | None = None) -> ServerParams:
        """``params`` (default: ``Params()``) with ``overrides`` applied, validated by ``Params``."""
        if params is not None and not overrides and isinstance(params, cls.Params):
            return params
        values = {**(params.model_dump() if params is not None else {}), **(overrides or {})}
        try:
            return cls.Params(**values)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, cls.Params.model_fields, prefix="server.")) from None

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


class FedAvgParams(ServerParams):
    """Hyperparameters of :class:`FedAvgOptimizer`."""

    lr: Positive = Field(1.0, description="server learning rate; 1.0 replaces the model by the clients' mean")


@SERVER_OPTIMIZERS.register("fedavg")
class FedAvgOptimizer(ServerOptimizer):
    """FedAvg's server step (McMahan et al. 2017): ``x + lr * delta`` (lr 1.0 by default).

    Parameters: :class:`FedAvgParams` (``lr``, default 1.0), given as an object or by name.
    """

    Params = FedAvgParams
    params: FedAvgParams

    def __init__(self, params: FedAvgParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self.lr = self.params.lr

    def step(self, params: State, delta: State) -> State:
        return {k: params[k] + self.lr * d for k, d in delta.items()}


def new_optimizer(name: str, **kwargs: Any) -> ServerOptimizer:
    """Build a registered server optimizer by name, e.g. ``new_optimizer("fedyogi", lr=1e-2)``;
    ``kwargs`` are validated by its ``Params``."""
    return SERVER_OPTIMIZERS.get(name)(**kwargs)


def to_cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached CPU copies of ``state``'s tensors: what a ``state_dict`` puts in a checkpoint
    (so a run on a GPU resumes anywhere, and later steps cannot change the saved copy)."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}

