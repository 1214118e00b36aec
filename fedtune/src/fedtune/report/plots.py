"""Matplotlib plots of metrics against rounds, saved beside the metrics.

Runs in one figure differ by line style and marker as well as colour (a run hidden under
another stays visible); titles name the data (:func:`data_title`); a log axis labels its
ticks as plain numbers (0.001, 0.01, ...). :func:`plot_diagnostics` draws every other
numeric series of ``metrics.jsonl`` (a server's effective lr, guard counts, the clients'
epochs averaged over the round's clients, ...) one panel each.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

LINE_STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "x"]

CURVES = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "personalized_accuracy": "personalized accuracy",
    "personalized_harmed": "clients harmed (personalized below global)",
}


def new_figure(**kwargs) -> Figure:
    """A figure drawn by Agg, outside pyplot: no pyplot import (a fifth of the report's
    time in a short run) and no figure manager to close; it goes with its last reference."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(m["round"], m[key]) for m in metrics if key in m and isinstance(m[key], int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def data_title(exp) -> str:
    """``digits, dirichlet partition (α 0.5), 6 clients``: the data a figure or table shows."""
    data = exp.data
    alpha = f" (α {data.alpha:g})" if data.partition == "dirichlet" else ""
    return f"{data.name}, {data.partition} partition{alpha}, {data.num_clients} clients"


def line_style(index: int, points: int) -> dict:
    """The ``index``-th run's line style and marker (markers every few points on long runs)."""
    return {
        "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
        "marker": MARKERS[index % len(MARKERS)],
        "markersize": 4,
        "markevery": max(1, points // 15),
        "linewidth": 1.4,
        "alpha": 0.9,
    }


def log_axis(ax, axis: str = "y") -> None:
    """A log scale whose ticks read as plain numbers: 1, 2 and 5 times the powers of ten
    when the data spans few decades, the powers of ten otherwise."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.dataLim.intervaly if axis == "y" else ax.dataLim.intervalx
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def plot_curves(runs: dict[str, list[dict]], key: str, path: Path, title: str | None = None) -> Path | None:
    """One line per run of metric ``key`` against rounds; None when no run has it.

    ``title``: what the figure shows it for (:func:`data_title`), after the metric's name.
    """
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    drawn = False
    for i, (name, metrics) in enumerate(runs.items()):
        x, y = series(metrics, key)
        if x:
            ax.plot(x, y, label=name, **line_style(i, len(x)))
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel("round")
    ax.set_ylabel(CURVES.get(key, key))
    ax.set_title(f"{CURVES.get(key, key)}\n{title}" if title else CURVES.get(key, key), fontsize=10)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_lines(lines: dict[str, tuple[list[int], list[float]]], path: Path, ylabel: str, title: str) -> Path:
    """Named (rounds, values) lines in one figure."""
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, (name, (x, y)) in enumerate(lines.items()):
        ax.plot(x, y, label=name, **line_style(i, len(x)))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def diagnostic_series(metrics: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Every numeric series of ``metrics`` besides the round and :data:`CURVES`: scalars as
    they are, per-client tables (``client_epochs``, ...) as their mean over the round's clients."""
    keys: list[str] = []
    for m in metrics:
        keys += [k for k in m if k not in keys and k != "round" and k not in CURVES]
    out = {}
    for key in keys:
        points = []
        for m in metrics:
            value = m.get(key)
            if isinstance(value, dict):
                numbers = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
                if numbers:
                    points.append((m["round"], sum(numbers) / len(numbers)))
            elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                points.append((m["round"], float(value)))
        if points:
            label = f"{key} (mean over clients)" if any(isinstance(m.get(key), dict) for m in metrics) else key
            out[label] = ([r for r, _ in points], [v for _, v in points])
    return out


def plot_diagnostics(metrics: list[dict], path: Path, title: str | None = None, columns: int = 3) -> Path | None:
    """One small panel per :func:`diagnostic_series` series (a log axis where positive
    values span more than two decades); None when there is none."""
    panels = diagnostic_series(metrics)
    if not panels:
        return None
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(figsize=(3.6 * columns, 2.5 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (label, (x, y)) in zip(axes.flat, panels.items(), strict=False):
        ax.plot(x, y, **line_style(0, len(x)))
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        # a few ticks a small panel: each tick is a label to lay out and lines to draw, most
        # of the figure's time with matplotlib's default of up to ten an axis
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        if min(y) > 0 and max(y) / min(y) > 100:
            log_axis(ax)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))  # 2036000, not "1e6" above the axis
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    # a fixed grid needs no tight_layout (its text measuring cost most of the figure's time)
    height = 2.5 * rows
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=1 - (0.75 if title else 0.35) / height,
                        wspace=0.38, hspace=0.65)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
