"""``backend = "flower"``: where the engine gets its Flower grid.

Inside a ``ServerApp`` (a real federation, ``flwr run``) the app binds the ``Grid`` it is
given with :func:`serving`, and the backend sends the round's tasks through it. Anywhere
else (``fedtune run`` on this machine) the backend starts Flower's simulation runtime and
sends them through that runtime's grid (:mod:`fedtune.deploy.simulation`). Either way the
round loop, and so the run folder, is the engine's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fedtune.config import Experiment
from fedtune.engine.backend import Backend
from fedtune.engine.worker import ClientWorker
from fedtune.errors import ConfigError


@dataclass(frozen=True)
class Serving:
    """A ``ServerApp``'s grid and how long to wait for its nodes and replies."""

    grid: object  # flwr.serverapp.Grid
    wait_nodes_s: float = 600.0
    round_timeout_s: float | None = 3600.0


_SERVING: ContextVar[Serving | None] = ContextVar("fedtune_flower_serving", default=None)


@contextmanager
def serving(settings: Serving) -> Iterator[None]:
    """Runs within it send client tasks through ``settings.grid``."""
    token = _SERVING.set(settings)
    try:
        yield
    finally:
        _SERVING.reset(token)


def require_flower() -> None:
    """One line, not a traceback, where Flower is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError('backend.name: "flower" needs Flower; install it with pip install "fedtune[flower]"') from None


def flower_backend(exp: Experiment, worker: ClientWorker) -> Backend:
    """The backend registered as ``flower`` in :data:`fedtune.engine.backend.BACKENDS`."""
    require_flower()
    from fedtune.deploy.grid_backend import GridBackend

    settings = _SERVING.get()
    if settings is not None:
        num = worker.federation.num_clients
        return GridBackend(settings.grid, num, settings.wait_nodes_s, settings.round_timeout_s, worker.device)  # type: ignore[arg-type]
    from fedtune.deploy.simulation import FlowerSimulation

    return FlowerSimulation(exp, worker)
