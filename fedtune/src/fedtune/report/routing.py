"""Flow's routing over rounds: per routed layer, the fraction of test instances routed to
the local path (``personalized_route_local.<layer>`` in the metrics), one line a layer."""

from __future__ import annotations

from pathlib import Path

from fedtune.report.plots import plot_lines, series

ROUTE_PREFIX = "personalized_route_local."


def plot_routing(metrics: list[dict], path: Path, title: str = "instances routed to the local path") -> Path | None:
    """One line per routed layer; None when the run routes nothing."""
    layers = sorted({k.removeprefix(ROUTE_PREFIX) for m in metrics for k in m if k.startswith(ROUTE_PREFIX)})
    lines = {layer: series(metrics, ROUTE_PREFIX + layer) for layer in layers}
    return plot_lines(lines, path, "fraction routed local", title) if lines else None
