"""The Ray backend: clients run on Ray actors, on this machine or on a Ray cluster.

Each actor is a :class:`~fedtune.engine.worker.ClientWorker` in its own process: it
loads the federation and builds the model once, then runs the tasks it is given. The
round's global trainables go to Ray's object store once per round; tasks are handed to
whichever actor is idle, and the outcomes come back in task order. Results equal the
in-process backend's because every random choice of a client derives from
(seed, round, client, ...), not from which process ran it.

A client whose actor dies (killed, out of memory) is recorded as a failed client, the
actor is replaced, and the round goes on by the experiment's failure policy.

``[backend] address`` joins a running cluster (``ray start --head`` on one machine,
``ray start --address=HEAD:6379`` on the others, fedtune installed on every node);
without it a local Ray is started on this machine's CPUs, bound to loopback, with usage
statistics off.
"""

from __future__ import annotations

import os
import socket

import torch

from fedtune.algorithms import Client, ClientState, ClientTask
from fedtune.config import Experiment
from fedtune.engine.backend import Backend
from fedtune.engine.worker import ClientFailure, ClientRun, ClientWorker, describe_error
from fedtune.errors import ConfigError
from fedtune.models.base import State
from fedtune.plugins import pickle_file_plugins_by_value


class _WorkerActor:
    """The body of one Ray actor: a client worker and nothing else."""

    def __init__(self, exp: Experiment, client: Client, threads: int) -> None:
        torch.set_num_threads(threads)
        self.worker = ClientWorker.from_experiment(exp, client)

    def run(self, task: ClientTask, global_state: State, state: ClientState | None) -> ClientRun:
        return self.worker.run(task, global_state, state)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, where Ray would retry an unreachable address for minutes."""
    if address == "auto":
        return  # Ray finds the local cluster itself, and says so at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f'backend.address: {address!r} is not "auto", "host:port" or "ray://host:port"')
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"backend.address: nothing answers at {host}:{port} ({err.strerror or err}); start the cluster with ray start --head") from None


def start_ray(address: str | None):
    """Join the cluster at ``address``, or start Ray on this machine.

    Returns ``(ray, started)``; ``started`` is False when Ray was already running in this
    process (then the caller leaves it running).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError('backend.name: "ray" needs Ray; install it with pip install "fedtune[ray]"') from None
    if ray.is_initialized():
        return ray, False
    if address is not None:
        check_reachable(address)
    try:
        if address is None:
            ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"backend.address: cannot join the Ray cluster at {address!r}: {str(err).splitlines()[0]}") from None
    return ray, True


class RayBackend(Backend):
    """Clients on Ray actors; ``exp.backend`` sets the address, actors and resources."""

    def __init__(self, exp: Experiment, client: Client) -> None:
        cfg = exp.backend
        ray, self._owns_ray = start_ray(cfg.address)
        pickle_file_plugins_by_value(ray.cloudpickle)  # a .py-file plugin's client class reaches the actors
        self.ray = ray
        self.exp, self.client = exp, client
        if cfg.num_actors is not None:
            count = cfg.num_actors
        else:
            count = int(ray.cluster_resources().get("CPU", 1) // cfg.cpus_per_client)
        count = max(1, min(count, exp.clients_per_round))
        self._actor_cls = ray.remote(num_cpus=cfg.cpus_per_client, num_gpus=cfg.gpus_per_client)(_WorkerActor)
        self.actors = [self._new_actor() for _ in range(count)]

    def _new_actor(self):
        threads = max(1, int(self.exp.backend.cpus_per_client))
        return self._actor_cls.remote(self.exp, self.client, threads)

    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        ray = self.ray
        state_ref = ray.put(global_state)  # once per round, shared by every actor on a node
        runs: list[ClientRun | None] = [None] * len(tasks)
        queue = list(enumerate(tasks))
        idle = list(range(len(self.actors)))
        pending: dict = {}
        while queue or pending:
            while queue and idle:
                index, task = queue.pop(0)
                slot = idle.pop(0)
                ref = self.actors[slot].run.remote(task, state_ref, states.get(task.client_id))
                pending[ref] = (index, slot)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, slot = pending.pop(ref)
            task = tasks[index]
            try:
                runs[index] = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                cause = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                why = f"its Ray actor died ({cause}); the actor was replaced"
                runs[index] = ClientRun(ClientFailure(task.client_id, task.round, why), None, 0.0)
                self.actors[slot] = self._new_actor()
            except ray.exceptions.RayError as err:  # e.g. a result that cannot be sent back
                runs[index] = ClientRun(ClientFailure(task.client_id, task.round, describe_error(err).splitlines()[0]), None, 0.0)
            idle.append(slot)
        return runs  # type: ignore[return-value]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._owns_ray:
            self.ray.shutdown()
