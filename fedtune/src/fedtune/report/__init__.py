"""Run reports: plots beside the metrics, report.md, and comparison tables."""

from __future__ import annotations

import json
from pathlib import Path

from fedtune.report.plots import CURVES, data_title, plot_curves, plot_diagnostics, series
from fedtune.report.routing import plot_routing
from fedtune.report.summary import markdown_table, rich_table, summarize


def write_run_report(run_dir: Path, exp, metrics: list[dict]) -> Path:
    """``report.md`` with the summary table and loss/accuracy plots of one run."""
    title = data_title(exp)
    # a curve needs two points: a metric measured once (evaluated only after the last
    # round, say) is in the table, and a figure of one dot is not worth its time
    curves = [key for key in CURVES if len(series(metrics, key)[0]) > 1]
    plots = [p for key in curves if (p := plot_curves({exp.name: metrics}, key, run_dir / f"{key}.png", title=title))]
    plots += [p for p in [plot_diagnostics(metrics, run_dir / "diagnostics.png", title=f"{exp.name}: diagnostics, {title}")] if p is not None]
    plots += [p for p in [plot_routing(metrics, run_dir / "routing.png")] if p is not None]
    lines = [
        f"# {exp.name}",
        "",
        f"{exp.algorithm.name} with server optimizer {exp.server.name} on {exp.data.name} "
        f"({exp.data.partition} partition, {exp.data.num_clients} clients, {exp.clients_per_round} per round), "
        f"model {exp.model.name}, seed {exp.seed}.",
        "",
        markdown_table([summarize(exp.name, metrics)]),
    ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    if getattr(exp, "drift", None) is not None:
        from fedtune.report.drift import drift_report

        lines += drift_report(run_dir, exp.drift, exp.rounds, metrics)
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_comparison(
    out_dir: Path, runs: dict[str, list[dict]], target: float | None = None, title: str | None = None
) -> tuple[list[dict], Path]:
    """Overlaid plots, ``comparison.md`` and ``comparison.json`` for several runs.

    ``target``: a test accuracy; the table adds the rounds, seconds and MB communicated
    each run took to reach it. Writes only these files (and the plots) in ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [summarize(name, metrics, target) for name, metrics in runs.items()]
    plots = [p for key in CURVES if (p := plot_curves(runs, key, out_dir / f"{key}.png", title=title))]
    (out_dir / "comparison.json").write_text(json.dumps({"target": target, "rows": rows}, indent=2) + "\n")
    heading = ["# Comparison", ""] + ([title, ""] if title else [])
    if target is not None:
        heading += [f"Target: test accuracy {target:.4f} (rounds, seconds and MB sent both ways until the first evaluation reaching it).", ""]
    md = heading + [markdown_table(rows)] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "comparison.md"
    path.write_text("\n".join(md) + "\n")
    return rows, path


__all__ = ["markdown_table", "plot_curves", "rich_table", "summarize", "write_comparison", "write_run_report"]
