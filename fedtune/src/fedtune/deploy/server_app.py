"""A Flower ``ServerApp`` that runs fedtune's round loop (flwr 1.42 Message API).

On a real federation (``flwr run`` against a SuperLink) the app is given a ``Grid``; it
loads the experiment, binds the grid (:func:`fedtune.deploy.backend.serving`) and runs the
engine's own :func:`~fedtune.engine.run_experiment`: the seeded sampling,
``configure_round``, ``aggregate``, evaluation, checkpoints and the metrics file are the
ones of an in-process run, and each client task goes to the SuperNode that holds its
partition (:mod:`fedtune.deploy.grid_backend`).

Run config keys (``[tool.flwr.app.config]``, or ``flwr run --run-config``):
``output`` (the run folder on the SuperLink's machine), ``overwrite`` / ``resume``
(as ``fedtune run``), ``wait-nodes-s`` (how long to wait for nodes holding every
partition) and ``round-timeout-s`` (how long a round waits for replies; 0: no limit).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedtune.config import Experiment
from fedtune.deploy.backend import Serving, serving


def serve_experiment(grid: Grid, context: Context, load: Callable[[Context], Experiment]):
    """Run the experiment ``load(context)`` gives, its clients on ``grid``'s nodes; returns the engine's result."""
    from fedtune.engine import run_experiment

    exp = load(context)
    config = context.run_config
    if config.get("output"):
        exp.output = str(config["output"])
    timeout = float(config.get("round-timeout-s", 3600))
    settings = Serving(grid, float(config.get("wait-nodes-s", 600)), timeout if timeout > 0 else None)
    with serving(settings):
        return run_experiment(exp, resume=bool(config.get("resume", False)), overwrite=bool(config.get("overwrite", False)))


def make_server_app(load: Callable[[Context], Experiment]) -> ServerApp:
    """A ``ServerApp`` running the experiment that ``load(context)`` gives."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve_experiment(grid, context, load)

    return app
