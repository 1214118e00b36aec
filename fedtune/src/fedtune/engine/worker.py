"""A client worker: runs client tasks on one model instance, wherever it lives.

The in-process backend holds one worker; each Ray actor builds its own from the
experiment (:meth:`ClientWorker.from_experiment`), loading the federation and building
the model once. A task's outcome is a result or a recorded failure, never an exception:
a failing client must not end the round.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS, Client, ClientResult, ClientState, ClientTask
from fedtune.config import Experiment
from fedtune.engine.devices import resolve_device
from fedtune.engine.federation import Federation
from fedtune.models import build_model
from fedtune.models.base import State
from fedtune.plugins import load_plugins
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


@dataclass
class ClientRun:
    """One task's outcome, the client's new state (stateful methods) and its seconds."""

    outcome: Outcome
    state: ClientState | None
    seconds: float


def describe_error(err: BaseException) -> str:
    """``Type: message (file:line)`` of where a client raised: one line for the metrics."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def build_client(exp: Experiment) -> Client:
    """The experiment's client procedure, from its algorithm's hyperparameters alone."""
    algo_cls = ALGORITHMS.get(exp.algorithm.name)
    return algo_cls.Client(algo_cls.Params(**exp.algorithm.hyperparameters()))


class ClientWorker:
    """Runs tasks of one client procedure on one model, with the federation's data."""

    def __init__(self, client: Client, model: nn.Module, federation: Federation, device: torch.device) -> None:
        self.client = client
        self.model = model
        self.federation = federation
        self.device = device

    @classmethod
    def from_experiment(cls, exp: Experiment, client: Client | None = None) -> ClientWorker:
        """A worker for another process: loads the data and builds the model from ``exp``.

        ``client``: the client procedure to run (default: the experiment's algorithm's).
        """
        load_plugins(exp.plugins)  # this process's registries need the experiment's plugins too
        device = resolve_device(exp.device)
        federation = Federation(exp)
        client = client or build_client(exp)
        model = client.prepare_model(build_model(exp.model.name, federation.info, exp.model.options, exp.seed), federation.info, exp.seed)
        return cls(client, model.to(device), federation, device)

    def run(self, task: ClientTask, global_state: State, state: ClientState | None = None) -> ClientRun:
        start = time.perf_counter()
        # the client's own randomness (dropout, ...): a stream of its own per (round, client)
        seed_global_rng(task.seed, "client-rng", task.round, task.client_id)
        try:
            data = self.federation.client_data(task.client_id, task.round).to(self.device)
            result, new_state = self.client.fit(self.model, global_state, data, task, state)
        except Exception as err:  # a failing client is recorded; the round goes on by policy
            return ClientRun(ClientFailure(task.client_id, task.round, describe_error(err)), None, time.perf_counter() - start)
        return ClientRun(result, new_state, time.perf_counter() - start)
