"""Where clients run. The engine hands a backend the round's tasks; the backend
returns one outcome per task, a result or a recorded failure.

``InProcessBackend`` runs clients one after another in this process (the default).
A backend for a Ray cluster implements the same ``run`` method.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedtune.algorithms.base import Algorithm, ClientResult, ClientTask
from fedtune.data.base import ClientData
from fedtune.models.base import State
from fedtune.seeding import seed_global_rng


@dataclass
class ClientFailure:
    """A client that raised or returned non-finite values; recorded in the metrics."""

    client_id: int
    round: int
    error: str

    def to_json(self) -> dict:
        return {"client": self.client_id, "round": self.round, "error": self.error}


Outcome = ClientResult | ClientFailure


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
    """Runs one round's client tasks and returns their outcomes in task order."""

    @abstractmethod
    def run(self, tasks: list[ClientTask], global_state: State) -> list[Outcome]: ...

    @property
    def client_seconds(self) -> float:
        """Seconds spent inside client updates during the last ``run``."""
        return 0.0


class InProcessBackend(Backend):
    """Runs clients sequentially on one model instance in this process."""

    def __init__(self, algorithm: Algorithm, model: nn.Module, client_data: Callable[[int, int], ClientData]) -> None:
        self.algorithm = algorithm
        self.model = model
        self.client_data = client_data
        self._client_seconds = 0.0

    @property
    def client_seconds(self) -> float:
        return self._client_seconds

    def run(self, tasks: list[ClientTask], global_state: State) -> list[Outcome]:
        outcomes: list[Outcome] = []
        self._client_seconds = 0.0
        for task in tasks:
            start = time.perf_counter()
            # the client's own randomness (dropout, ...): a stream of its own per (round, client)
            seed_global_rng(task.seed, "client-rng", task.round, task.client_id)
            try:
                data = self.client_data(task.client_id, task.round)
                result = self.algorithm.client_update(self.model, global_state, data, task)
            except Exception as err:  # a failing client is recorded; the round goes on by policy
                where = traceback.extract_tb(err.__traceback__)[-1]
                outcomes.append(
                    ClientFailure(task.client_id, task.round, f"{type(err).__name__}: {err} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
                )
                continue
            finally:
                self._client_seconds += time.perf_counter() - start
            outcomes.append(result)
        return outcomes
