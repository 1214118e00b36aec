"""Experiment tracking besides ``metrics.jsonl``: TensorBoard event files and MLflow runs.

``[log] tensorboard = true`` writes event files under ``<run folder>/tensorboard``;
``[log] mlflow = "URI"`` logs an MLflow run (a local folder or any tracking URI) into the
MLflow experiment named after the fedtune experiment. Each gets the resolved config (as
text for TensorBoard, as flattened parameters for MLflow) and every round's numeric
metrics at step = round; per-client tables and lists stay in ``metrics.jsonl``. The
packages are optional (``pip install "fedtune[tracking]"``); asking for one that is not
installed is one line before anything runs. Trackers are registered by name
(:data:`TRACKERS`); each opens its files at the first round, after the run folder exists.
"""

from __future__ import annotations

import importlib.util
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from fedtune.config import Experiment
from fedtune.errors import ConfigError
from fedtune.registry import Registry


def round_scalars(record: dict) -> dict[str, float]:
    """A round's numeric metrics (per-client tables and lists left out), and its failure count."""
    out = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "round"}
    out["failures"] = float(len(record.get("failures", [])))
    return out


def flat_params(exp: Experiment) -> dict[str, str]:
    """The resolved config as ``section.key -> value`` strings (MLflow parameters)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(value)[:500]  # MLflow's limit on a parameter's value

    walk("", exp.model_dump(mode="json", exclude_none=True))
    return out


class Tracker(ABC):
    """Receives every round's record of one run."""

    @abstractmethod
    def log_round(self, rnd: int, record: dict) -> None: ...

    def close(self) -> None:
        """Flush and finish."""


def _require(module: str, field: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f'log.{field}: needs the {module} package; install it with pip install "fedtune[tracking]"')


TrackerFactory = Callable[[Experiment], Tracker]
TRACKERS: Registry[TrackerFactory] = Registry("tracker")


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files under ``<run folder>/tensorboard`` (torch's SummaryWriter)."""

    def __init__(self, exp: Experiment) -> None:
        _require("tensorboard", "tensorboard")
        self.exp = exp
        self.writer = None

    def log_round(self, rnd: int, record: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.exp.run_dir() / "tensorboard"))
            self.writer.add_text("config", "```toml\n" + self.exp.to_toml() + "\n```", global_step=0)
        for key, value in round_scalars(record).items():
            self.writer.add_scalar(key, value, global_step=rnd)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def tracking_uri(text: str) -> str:
    """A URI as given; a plain path (``runs/mlflow``) as a ``file:`` URI of that folder."""
    return text if "://" in text or text.startswith("file:") else Path(text).resolve().as_uri()


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    """One MLflow run per fedtune run, in the MLflow experiment named after it."""

    def __init__(self, exp: Experiment) -> None:
        _require("mlflow", "mlflow")
        self.exp = exp
        self.client = None
        self.run_id: str | None = None

    def _start(self) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = tracking_uri(self.exp.log.mlflow or "")
        if uri.startswith("file:"):  # MLflow 3 keeps its folder store in maintenance mode, behind this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(self.exp.name)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(self.exp.name)
        self.run_id = self.client.create_run(experiment_id, run_name=self.exp.name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat_params(self.exp).items()])

    def log_round(self, rnd: int, record: dict) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            self._start()
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, rnd) for k, v in round_scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id)


def open_trackers(exp: Experiment) -> list[Tracker]:
    """The trackers ``exp.log`` asks for (a missing package: :class:`ConfigError`, one line)."""
    wanted = [name for name, on in (("tensorboard", exp.log.tensorboard), ("mlflow", exp.log.mlflow is not None)) if on]
    return [TRACKERS.get(name)(exp) for name in wanted]
