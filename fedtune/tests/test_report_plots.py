"""Plots people read: titles naming the data, runs told apart by line style, readable log
ticks, a panel per numeric diagnostic, and the initial model's evaluation as round 0."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from fedtune.config import load_experiment
from fedtune.engine import run_experiment
from fedtune.report import plots
from fedtune.report.summary import summarize


@pytest.fixture
def keep_figures(monkeypatch):
    """The figures the plot functions draw (outside pyplot), to look at them."""
    kept = []
    new_figure = plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda **kwargs: kept.append(new_figure(**kwargs)) or kept[-1])
    return kept


def _metrics(offset: float = 0.0) -> list[dict]:
    return [{"round": r, "test_accuracy": 0.5 + 0.1 * r + offset, "eff_lr_mean": 10.0 ** -r, "guarded": r % 2,
             "flag": True, "client_epochs": {"0": 1, "1": 3}, "note": "x"} for r in range(1, 5)]


def test_runs_differ_by_line_style_and_title_names_the_data(tmp_path, keep_figures):
    exp = load_experiment(raw={"data": {"name": "digits", "partition": "dirichlet", "alpha": 0.3, "num_clients": 20}})
    title = plots.data_title(exp)
    assert title == "digits, dirichlet partition (α 0.3), 20 clients"
    same = _metrics()
    plots.plot_curves({"fedavg": same, "fedprox": same}, "test_accuracy", tmp_path / "acc.png", title=title)
    ax = keep_figures[0].axes[0]
    styles = [(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]
    assert len(styles) == 2 and styles[0] != styles[1] and styles[0][0] != styles[1][0]  # identical curves stay visible
    assert ax.get_title() == f"test accuracy\n{title}"


def test_log_axis_ticks_read_as_numbers(tmp_path, keep_figures):
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1e-4, 1e-2, 1.0])
    plots.log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "0.01" in labels and "1" in labels and not any("$" in t or "^" in t for t in labels)
    plt.close(fig)


def test_every_numeric_diagnostic_gets_a_panel(tmp_path, keep_figures):
    series = plots.diagnostic_series(_metrics())
    assert set(series) == {"eff_lr_mean", "guarded", "client_epochs (mean over clients)"}  # not the curves, bools or text
    assert series["client_epochs (mean over clients)"] == ([1, 2, 3, 4], [2.0, 2.0, 2.0, 2.0])
    path = plots.plot_diagnostics(_metrics(), tmp_path / "diagnostics.png", title="t")
    assert path.exists()
    axes = [ax for ax in keep_figures[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == list(series)
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "linear"  # eff lr spans 3 decades
    assert plots.plot_diagnostics([{"round": 1, "test_accuracy": 0.5}], tmp_path / "none.png") is None


def test_initial_evaluation_is_round_0(tmp_path):
    raw = {"rounds": 2, "clients_per_round": 3, "output": str(tmp_path / "run"), "eval": {"at_start": True},
           "data": {"name": "digits", "num_clients": 6}, "model": {"name": "logreg"}}
    metrics = run_experiment(load_experiment(raw=raw)).metrics
    assert [m["round"] for m in metrics] == [0, 1, 2]
    assert 0 < metrics[0]["test_accuracy"] < 0.3  # an untrained 10-class model
    assert "train_loss" not in metrics[0]
    assert summarize("r", metrics)["rounds"] == 2
    assert (tmp_path / "run" / "diagnostics.png").exists() and "![diagnostics](diagnostics.png)" in (tmp_path / "run" / "report.md").read_text()
    raw["eval"] = {}
    raw["output"] = str(tmp_path / "plain")
    plain = run_experiment(load_experiment(raw=raw)).metrics
    assert [m["round"] for m in plain] == [1, 2]
    assert plain[1]["test_accuracy"] == metrics[2]["test_accuracy"]  # evaluating round 0 changes nothing after it
