"""Where clients run. The engine hands a backend the round's tasks; the backend returns
one :class:`~fedtune.engine.worker.ClientRun` per task, in task order, whose outcome is a
result or a recorded failure.

Backends are registered by name (``[backend] name = ...`` in an experiment):

- ``inprocess``: clients one after another on the server's own worker (the default);
- ``vmap``: the round's clients trained together, vectorized over clients with
  ``torch.func.vmap`` (small models; :mod:`fedtune.engine.vmap_backend`);
- ``ray``: clients on Ray actors, on this machine or a cluster (:mod:`fedtune.engine.ray_backend`);
- ``flower``: clients as Flower ClientApps, in Flower's simulation runtime or on the
  SuperNodes of a real federation (:mod:`fedtune.deploy.backend`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from fedtune.algorithms import ClientResult, ClientState, ClientTask
from fedtune.config import Experiment
from fedtune.engine.worker import ClientFailure, ClientRun, ClientWorker, Outcome
from fedtune.models.base import State
from fedtune.registry import Registry


def nan_metric(result: ClientResult) -> str | None:
    """The first NaN metric a client reported, if any (cheap: no tensor is read)."""
    for name, value in result.metrics.items():
        if isinstance(value, float) and value != value:
            return f"metric {name!r} is NaN"
    return None


def first_nonfinite(state: State) -> str | None:
    """The name of the first tensor of ``state`` holding NaN or inf, if any."""
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            return name
    return None


def nonfinite_tensor(result: ClientResult) -> str | None:
    """What is wrong with a client result whose tensors hold NaN or inf, if anything."""
    name = first_nonfinite(result.tensors)
    return None if name is None else f"non-finite values in tensor {name!r}"


class Backend(ABC):
    """Runs one round's client tasks and returns their runs in task order."""

    @abstractmethod
    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        """``states`` holds each task's client state (stateful methods only; else empty)."""

    def close(self) -> None:
        """Release what the backend holds (processes, actors)."""


BackendFactory = Callable[[Experiment, ClientWorker], Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")


@BACKENDS.register("inprocess")
class InProcessBackend(Backend):
    """Runs clients sequentially on the server's own worker (one model instance)."""

    def __init__(self, exp: Experiment, worker: ClientWorker) -> None:
        self.worker = worker

    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        return [self.worker.run(task, global_state, states.get(task.client_id)) for task in tasks]


@BACKENDS.register("vmap")
def _vmap_backend(exp: Experiment, worker: ClientWorker) -> Backend:
    from fedtune.engine.vmap_backend import VmapBackend  # imports the algorithms it knows

    return VmapBackend(exp, worker)


@BACKENDS.register("ray")
def _ray_backend(exp: Experiment, worker: ClientWorker) -> Backend:
    from fedtune.engine.ray_backend import RayBackend  # ray is an optional dependency

    return RayBackend(exp, worker.client)


@BACKENDS.register("flower")
def _flower_backend(exp: Experiment, worker: ClientWorker) -> Backend:
    from fedtune.deploy.backend import flower_backend  # flwr is an optional dependency

    return flower_backend(exp, worker)


__all__ = [
    "BACKENDS",
    "Backend",
    "ClientFailure",
    "ClientRun",
    "InProcessBackend",
    "Outcome",
    "first_nonfinite",
    "nan_metric",
    "nonfinite_tensor",
]
