"""A Flower app project for one experiment: what ``fedtune flower app`` writes.

The folder holds ``pyproject.toml`` (``[tool.flwr.app]``: publisher, components and run
config), ``experiment.toml`` (the resolved experiment, with ``backend = "flower"``) and
``fedtune_app.py``, which builds the ``ServerApp`` and the ``ClientApp`` from the
experiment shipped beside it. ``flwr run DIR CONNECTION`` bundles the folder into a FAB
and runs it: the ServerApp on the SuperLink's side runs the rounds and writes the run
folder, each SuperNode's ClientApp trains the partitions its node config names.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomli_w

from fedtune.config import Experiment, load_experiment
from fedtune.errors import ConfigError

EXPERIMENT_FILE = "experiment.toml"
APP_MODULE = "fedtune_app.py"
BACKENDS_THAT_APPLY = ("inprocess", "flower")  # where clients run is the federation's SuperNodes

_APP_SOURCE = '''"""Flower components of a fedtune experiment (written by `fedtune flower app`)."""

from pathlib import Path

from fedtune.deploy.project import bundled_client_app, bundled_server_app

# one assignment each: Flower checks the components by reading this file, not running it
server_app = bundled_server_app(Path(__file__).parent)
client_app = bundled_client_app(Path(__file__).parent)
'''


class BundledExperiment:
    """``load(context)``: the experiment file the run config names, in the installed app's folder."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir

    def __call__(self, context) -> Experiment:
        return load_experiment(self.app_dir / str(context.run_config.get("experiment", EXPERIMENT_FILE)))


def bundled_server_app(app_dir: Path):
    """The ``ServerApp`` of the experiment in ``app_dir`` (the installed FAB)."""
    from fedtune.deploy.server_app import make_server_app

    return make_server_app(BundledExperiment(app_dir))


def bundled_client_app(app_dir: Path):
    """The ``ClientApp`` of the experiment in ``app_dir`` (the installed FAB)."""
    from fedtune.deploy.client_app import make_client_app

    return make_client_app(BundledExperiment(app_dir))


def project_name(exp: Experiment) -> str:
    return "fedtune-" + (re.sub(r"[^a-z0-9]+", "-", exp.name.lower()).strip("-") or "experiment")


def write_project(exp: Experiment, out: Path, overwrite: bool = False) -> list[Path]:
    """Write the Flower app project for ``exp`` into ``out``; returns the files written."""
    if exp.backend.name not in BACKENDS_THAT_APPLY:
        raise ConfigError(f"backend.name: {exp.backend.name!r} does not apply to a Flower app (its clients run on the SuperNodes); remove it")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out: {out} is not empty; pass --overwrite to replace its files")
    from importlib.metadata import version

    out.mkdir(parents=True, exist_ok=True)
    exp = exp.model_copy(deep=True)
    exp.backend = type(exp.backend)(name="flower")
    run_dir = exp.run_dir().resolve()
    exp.output = None
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": project_name(exp),
            "version": "1.0.0",
            "description": f"fedtune experiment {exp.name!r} as a Flower app",
            "license": "Apache-2.0",
            # fedtune is installed beside Flower on every machine (it is not on a package index)
            "dependencies": [f"flwr>={version('flwr')}"],
        },
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "fedtune": {"version": version("fedtune")},
            "flwr": {
                "app": {
                    "publisher": "fedtune",
                    "components": {"serverapp": "fedtune_app:server_app", "clientapp": "fedtune_app:client_app"},
                    "config": {
                        "experiment": EXPERIMENT_FILE,
                        "output": str(run_dir),
                        "overwrite": False,
                        "resume": False,
                        "wait-nodes-s": 600,
                        "round-timeout-s": 3600,
                    },
                }
            },
        },
    }
    files = {
        out / "pyproject.toml": tomli_w.dumps(pyproject),
        out / EXPERIMENT_FILE: exp.to_toml(),
        out / APP_MODULE: _APP_SOURCE,
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)
