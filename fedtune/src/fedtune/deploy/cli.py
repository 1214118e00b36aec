"""``fedtune flower``: Flower deployments of experiments (mounted by ``fedtune.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

flower_app = typer.Typer(help="Run experiments on Flower (SuperLink and SuperNodes, or its simulation).", no_args_is_help=True)


@flower_app.callback()
def flower() -> None:
    """Run experiments on Flower (SuperLink and SuperNodes, or its simulation)."""


@flower_app.command("app")
def app(
    experiment: Annotated[Path, typer.Argument(help="experiment TOML")],
    out: Annotated[Path, typer.Option(help="folder of the Flower app project to write")],
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a field, e.g. --set rounds=100")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the files of a non-empty --out")] = False,
) -> None:
    """Write a Flower app project for EXPERIMENT that `flwr run` executes on a federation."""
    from fedtune.cli import console, fail
    from fedtune.config import ConfigError, load_experiment
    from fedtune.deploy.backend import require_flower
    from fedtune.deploy.project import write_project
    from fedtune.registry import UnknownNameError

    try:
        require_flower()
        exp = load_experiment(experiment, overrides)
        files = write_project(exp, out, overwrite)
    except (ConfigError, UnknownNameError) as err:
        fail(str(err))
    console.print(f"wrote {', '.join(p.name for p in files)} to {out}")
    console.print(f"run it: flwr run {out} CONNECTION  (SuperNodes started with --node-config 'partition-id=N')")
