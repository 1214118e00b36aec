"""Seeds and sweeps: one experiment over a grid of settings, each run once per seed.

``fedtune run EXP --seeds 0,1,2 --sweep algorithm.lr=0.01,0.03,0.1 --sweep server.lr=1,0.5``
runs every combination of the ``--sweep`` values (their Cartesian product) with every
seed. Each run gets its own folder under the experiment's run folder::

    runs/<name>/algorithm.lr=0.01,server.lr=1/seed0/    (config.toml, metrics.jsonl, ...)
    runs/<name>/sweep.md, sweep.json                    the table over the grid

A run whose folder already holds the same resolved configuration and all its rounds is
not run again (its metrics are read back); one that stopped early resumes from its
newest checkpoint; a folder holding another configuration is refused unless
``--overwrite``. So an interrupted sweep, or one given more seeds or values, runs only
what is missing.

Each setting's row gives the mean ± sample standard deviation (n - 1 in the denominator)
over its seeds of the final and best test accuracy and the final test loss; the best
setting is the one with the highest mean of the chosen metric (lowest for a loss).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedtune.config import Experiment, load_experiment
from fedtune.errors import ConfigError

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Axis:
    """One ``--sweep key=v1,v2,...``: a dotted key and the TOML values it takes."""

    key: str
    values: tuple


def parse_sweep(text: str) -> Axis:
    """``"algorithm.lr=0.01,0.03"`` -> Axis("algorithm.lr", (0.01, 0.03)); values are TOML
    (``'optimizer="sgd","adam"'``), a bare word a string."""
    if "=" not in text:
        raise ConfigError(f"--sweep {text!r}: expected key.sub=value1,value2,...")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        values = tomllib.loads(f"v = [{raw}]")["v"]
    except tomllib.TOMLDecodeError:
        values = [v.strip() for v in raw.split(",")]
    if not key or not values:
        raise ConfigError(f"--sweep {text!r}: expected key.sub=value1,value2,...")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--sweep {text!r}: a value is given twice")
    if key == "seed":
        raise ConfigError("--sweep seed=...: give the seeds with --seeds 0,1,2")
    return Axis(key, tuple(values))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-4"`` -> [0, 1, 2] / [0, 1, 2, 3, 4]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers, e.g. 0,1,2 or 0-4") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def _toml_value(value) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def setting_label(setting: dict[str, object]) -> str:
    """A setting as a folder name and a table row: ``algorithm.lr=0.01,server.lr=1``."""
    if not setting:
        return "base"
    return ",".join(f"{k}={_toml_value(v).strip(chr(34))}" for k, v in setting.items())


@dataclass
class Point:
    """One run of the grid: its setting, seed, folder and validated experiment."""

    setting: dict[str, object]
    seed: int
    exp: Experiment


def grid(
    path: Path,
    overrides: list[str],
    axes: list[Axis],
    seeds: list[int] | None,
    root: Path | None,
    plugins: list[str] | None = None,
    unset: list[str] | None = None,
) -> tuple[Path, list[Point]]:
    """Every (setting, seed) of the grid as a validated experiment with its own folder.

    All points are validated before anything runs, so a bad value anywhere in the grid is
    one line before the first run. ``root``: the folder for the grid (default: the
    experiment's run folder); ``seeds`` None: the experiment's own seed only.
    """
    base = load_experiment(path, overrides, plugins=plugins, unset=unset)
    root = Path(root) if root is not None else base.run_dir()
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--sweep: a key is swept twice ({', '.join(keys)})")
    points = []
    for values in itertools.product(*(a.values for a in axes)):
        setting = dict(zip(keys, values, strict=True))
        extra = [f"{k}={_toml_value(v)}" for k, v in setting.items()]
        folder = root / setting_label(setting) if axes else root
        for seed in seeds if seeds is not None else [base.seed]:
            try:
                exp = load_experiment(path, [*overrides, *extra, f"seed={seed}"], plugins=plugins, unset=unset)
            except ConfigError as err:
                raise ConfigError(f"{setting_label(setting)}, seed {seed}: {err}") from None
            exp.output = str(folder / f"seed{seed}")
            points.append(Point(setting, seed, exp))
    return root, points


def run_state(exp: Experiment) -> str:
    """What ``exp``'s folder holds: ``"new"`` (no run), ``"done"`` (this configuration,
    every round), ``"resume"`` (this configuration, stopped early) or ``"other"`` (a run
    of another configuration)."""
    from fedtune.engine.loop import CONFIG_FILE, METRICS_FILE

    run_dir = exp.run_dir()
    if not (run_dir / METRICS_FILE).exists():
        return "new"
    config = run_dir / CONFIG_FILE
    try:  # compared as resolved, so a folder written before defaults were spelled out still matches
        same = config.exists() and load_experiment(config).resolved() == exp.resolved()
    except ConfigError:
        same = False
    if not same:
        return "other"
    lines = [ln for ln in (run_dir / METRICS_FILE).read_text().splitlines() if ln.strip()]
    return "done" if lines and json.loads(lines[-1])["round"] >= exp.rounds else "resume"


RunFn = Callable[[Experiment, str], list[dict]]


def run_grid(points: list[Point], run: RunFn, overwrite: bool = False) -> list[tuple[Point, list[dict], str]]:
    """Run every point that is missing and return (point, metrics, how) for all of them.

    ``run(exp, how)``, how = ``"new"``, ``"resume"`` or ``"overwrite"``, runs one point
    and returns its metrics; a finished run is read back (how = ``"done"``). Every folder
    is checked before the first run, so a folder of another configuration stops the grid
    (unless ``overwrite``) before anything runs.
    """
    from fedtune.engine.loop import METRICS_FILE, _read_metrics

    plan = []
    for p in points:
        state = run_state(p.exp)
        if state == "other" and not overwrite:
            raise ConfigError(f"output: {p.exp.run_dir()} holds a run of another configuration; pass --overwrite to replace it")
        plan.append((p, "overwrite" if state == "other" else state))
    out = []
    for p, how in plan:
        metrics = _read_metrics(p.exp.run_dir() / METRICS_FILE) if how == "done" else run(p.exp, how)
        out.append((p, metrics, how))
    return out


METRICS = {  # metric -> (label, higher is better)
    "final_test_accuracy": ("final test acc", True),
    "best_test_accuracy": ("best test acc", True),
    "final_test_loss": ("final test loss", False),
}


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarize_grid(results: list[tuple[Point, list[dict]]], metric: str = "final_test_accuracy") -> tuple[list[dict], dict | None]:
    """One row per setting (mean and sd over its seeds of each of :data:`METRICS`) and the
    best row by ``metric``'s mean (None when no run has it)."""
    from fedtune.report.summary import summarize

    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    by_setting: dict[str, list[dict]] = {}
    settings: dict[str, dict] = {}
    for point, metrics in results:
        label = setting_label(point.setting)
        settings[label] = point.setting
        by_setting.setdefault(label, []).append(summarize(label, metrics) | {"seed": point.seed})
    rows = []
    for label, runs in by_setting.items():
        row: dict = {"setting": label, **{k: v for k, v in settings[label].items()}, "seeds": [r["seed"] for r in runs]}
        for key in METRICS:
            values = [r[key] for r in runs if r.get(key) is not None and math.isfinite(r[key])]
            row[key], row[f"{key}_sd"] = _mean_sd(values)
        rows.append(row)
    higher = METRICS[metric][1]
    scored = [r for r in rows if r[metric] is not None]
    best = (max if higher else min)(scored, key=lambda r: r[metric]) if scored else None
    return rows, best


def format_mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f}"


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells: setting, seeds, then mean ± sd of each metric."""
    headers = ["setting", "seeds", *(label for label, _ in METRICS.values())]
    cells = [
        [r["setting"], str(len(r["seeds"])), *(format_mean_sd(r[k], r[f"{k}_sd"]) for k in METRICS)] for r in rows
    ]
    return headers, cells


def write_sweep(root: Path, rows: list[dict], best: dict | None, metric: str) -> Path:
    """``sweep.json`` (rows and best) and ``sweep.md`` (the table) in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SWEEP_FILE).write_text(json.dumps({"metric": metric, "rows": rows, "best": best}, indent=2) + "\n")
    headers, cells = table_rows(rows)
    lines = ["# Sweep", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    if best is not None:
        lines += ["", f"Best by {METRICS[metric][0]} (mean over seeds): **{best['setting']}**, "
                      f"{format_mean_sd(best[metric], best[f'{metric}_sd'])}."]
    path = root / "sweep.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["Axis", "Point", "grid", "parse_seeds", "parse_sweep", "run_grid", "run_state", "setting_label", "summarize_grid", "write_sweep"]
