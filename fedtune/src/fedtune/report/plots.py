"""Matplotlib plots of metrics against rounds, saved beside the metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "personalized_accuracy": "personalized accuracy",
    "personalized_harmed": "clients harmed (personalized below global)",
}


def series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(m["round"], m[key]) for m in metrics if key in m and isinstance(m[key], int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(runs: dict[str, list[dict]], key: str, path: Path, title: str | None = None) -> Path | None:
    """One line per run of metric ``key`` against rounds; None when no run has it."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for name, metrics in runs.items():
        x, y = series(metrics, key)
        if x:
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round")
    ax.set_ylabel(CURVES.get(key, key))
    ax.set_title(title or CURVES.get(key, key))
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_lines(lines: dict[str, tuple[list[int], list[float]]], path: Path, ylabel: str, title: str) -> Path:
    """Named (rounds, values) lines in one figure."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in lines.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
