"""``backend = "flower"`` on this machine: clients run in Flower's simulation runtime.

``flwr.simulation.run_simulation`` starts Flower's runtime (an in-memory SuperLink, one
virtual SuperNode per client partition with ``partition-id`` in its node config, and
ClientApps on Ray actors) and runs a ``ServerApp`` in a thread of its own. Our
``ServerApp`` lends the ``Grid`` it is given to the engine's round loop, which keeps
running where ``fedtune run`` called it, and waits until the run is over; every client
task then travels as a Flower message to a ClientApp (:mod:`fedtune.deploy.grid_backend`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading

from fedtune.algorithms import ClientState, ClientTask
from fedtune.config import Experiment
from fedtune.engine.backend import Backend
from fedtune.engine.worker import ClientRun, ClientWorker
from fedtune.errors import RunError
from fedtune.models.base import State

START_TIMEOUT_S = 300.0  # Ray's start on a busy 2-core machine takes tens of seconds


class _WithoutRunSimulationNotice(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated in favour of ``flwr run``:
    fedtune calls it for the user, and ``fedtune flower app`` is the ``flwr run`` way."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


_NOTICE_FILTER = _WithoutRunSimulationNotice()


class FixedExperiment:
    """``load(context)`` for a ClientApp built with its experiment (picklable to Ray actors)."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp

    def __call__(self, context) -> Experiment:
        return self.exp


class FlowerSimulation(Backend):
    """Flower's simulation runtime in a background thread, its grid driven by the engine."""

    def __init__(self, exp: Experiment, worker: ClientWorker) -> None:
        # no telemetry or Ray usage reports from an offline research run
        os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        logging.getLogger("flwr").addFilter(_NOTICE_FILTER)
        from flwr.serverapp import ServerApp
        from flwr.simulation import run_simulation

        from fedtune.deploy.client_app import make_client_app
        from fedtune.deploy.grid_backend import GridBackend

        self._grids: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._error: list[BaseException] = []
        server_app = ServerApp()

        @server_app.main()
        def lend_grid(grid, context) -> None:
            self._grids.put(grid)
            self._done.wait()

        cpus = os.cpu_count() or 1
        gpus = 0.0 if worker.device.type == "cpu" else 1.0 / cpus
        backend_config = {
            "client_resources": {"num_cpus": 1, "num_gpus": gpus},
            "init_args": {"num_cpus": cpus, "_node_ip_address": "127.0.0.1", "log_to_driver": False, "configure_logging": False},
        }
        num_nodes = worker.federation.num_clients

        def serve() -> None:
            try:
                run_simulation(server_app, make_client_app(FixedExperiment(exp)), num_supernodes=num_nodes, backend_config=backend_config)
            except BaseException as err:  # reported to the engine's thread
                self._error.append(err)
                self._grids.put(None)

        self._thread = threading.Thread(target=serve, name="flower-simulation", daemon=True)
        self._thread.start()
        try:
            grid = self._grids.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            grid = None
        if grid is None:
            self.close()
            cause = f": {self._error[0]}" if self._error else f" within {START_TIMEOUT_S:g} s"
            raise RunError(f"backend flower: Flower's simulation runtime did not start{cause}")
        try:
            self.inner = GridBackend(grid, num_nodes, START_TIMEOUT_S, None, worker.device, alive=self._thread.is_alive)
        except BaseException:
            self.close()  # the engine closes only a backend that started
            raise

    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        if not self._thread.is_alive():
            raise RunError(f"backend flower: Flower's simulation runtime stopped{': ' + str(self._error[0]) if self._error else ''}")
        return self.inner.run(tasks, global_state, states)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=60)
