"""How a run copes with concept drift (Flash, Panchal et al., ICML 2023).

For each drift round D (from ``DriftSimulator.drift_rounds``) and the window of
evaluated rounds from D up to the next drift (or the end of the run):

- ``pre_accuracy``: accuracy at the last evaluation before D;
- ``lowest_accuracy`` / ``lowest_round``: the minimum in the window;
- ``recovery_rounds``: rounds from D to the first evaluation, at or after the minimum,
  with accuracy ≥ the target; ``None`` when the window ends first (not recovered).
  The target is ``target`` when given, the same accuracy for every method compared
  (:func:`common_target`), and otherwise ``recover`` × the run's own pre-drift accuracy;
- ``recovery_rounds_own``: always to ``recover`` × the run's own pre-drift accuracy
  (0.95 by default), which penalizes the run that was best before the drift: keep it
  as a second figure beside the common one;
- ``auc``: area under the accuracy curve over the window (trapezoid rule) divided by
  its length in rounds, i.e. the mean accuracy after the drift, in [0, 1].

An incremental drift moves client groups to the new concept one after another;
:func:`group_drift_metrics` measures each group on its own clients' accuracy, from its
own drift round to the end of the run, instead of one window over all clients.

``plot_drift`` draws accuracy against rounds with the drift rounds marked, and the
server's effective learning rate (``eff_lr_mean``) beneath it on a log scale.
"""

from __future__ import annotations

from pathlib import Path

from fedtune.report.plots import line_style, log_axis, new_figure


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(m["round"]), float(m[key])) for m in metrics if key in m and m[key] is not None]
    return [r for r, _ in pts], [v for _, v in pts]


def common_target(pre_accuracies: list[float], fraction: float = 0.95) -> float:
    """One recovery target for every method compared: ``fraction`` × the lowest of their
    pre-drift accuracies, so every method had reached it before the drift."""
    if not pre_accuracies:
        raise ValueError("common_target: no pre-drift accuracy given")
    return fraction * min(pre_accuracies)


def _recovery(window: list[tuple[int, float]], start: int, low_round: int, target: float | None) -> int | None:
    if target is None:
        return None
    return next((r - start for r, a in window if r >= low_round and a >= target), None)


def drift_metrics(
    metrics: list[dict],
    drift_rounds: list[int],
    key: str = "test_accuracy",
    recover: float = 0.95,
    until_next: bool = True,
    target: float | None = None,
) -> list[dict]:
    """One dict per drift round: pre/lowest accuracy, recovery rounds and post-drift AUC.

    ``target``: the accuracy to recover to, the same for every method compared (see
    :func:`common_target`); ``None`` uses ``recover`` × the run's own pre-drift accuracy.
    ``until_next=False`` lets every window run to the end of the run.
    """
    rounds, acc = _series(metrics, key)
    out = []
    for i, start in enumerate(drift_rounds):
        stop = drift_rounds[i + 1] if until_next and i + 1 < len(drift_rounds) else float("inf")
        before = [a for r, a in zip(rounds, acc, strict=True) if r < start]
        window = [(r, a) for r, a in zip(rounds, acc, strict=True) if start <= r < stop]
        row: dict = {"drift_round": start, "pre_accuracy": before[-1] if before else None}
        own = recover * row["pre_accuracy"] if row["pre_accuracy"] is not None else None
        row["target"] = target if target is not None else own
        if not window:
            empty = dict.fromkeys(("lowest_accuracy", "lowest_round", "recovery_rounds", "recovery_rounds_own", "auc"))
            out.append(row | empty)
            continue
        low_round, low = min(window, key=lambda p: p[1])
        recovery = _recovery(window, start, low_round, row["target"])
        row["recovery_rounds_own"] = _recovery(window, start, low_round, own)
        if len(window) > 1:
            area = sum((r1 - r0) * (a0 + a1) / 2 for (r0, a0), (r1, a1) in zip(window, window[1:], strict=False))
            auc = area / (window[-1][0] - window[0][0])
        else:
            auc = window[0][1]
        out.append(row | {"lowest_accuracy": low, "lowest_round": low_round, "recovery_rounds": recovery, "auc": auc})
    return out


def group_key(group: int, key: str = "test_accuracy") -> str:
    """The metrics key of one client group's accuracy (``test_accuracy_group2``)."""
    return f"{key}_group{group}"


def group_drift_metrics(
    metrics: list[dict],
    group_rounds: list[int],
    key: str = "test_accuracy",
    recover: float = 0.95,
    target: float | None = None,
) -> list[dict]:
    """One dict per client group of an incremental drift (group g drifts at
    ``group_rounds[g]``), measured on that group's accuracy (``group_key(g, key)`` in each
    round's metrics) from its drift round to the end of the run; as :func:`drift_metrics`
    otherwise, with ``group`` added."""
    rows = []
    for g, start in enumerate(group_rounds):
        (row,) = drift_metrics(metrics, [start], group_key(g, key), recover, until_next=False, target=target)
        rows.append({"group": g} | row)
    return rows


def plot_drift(
    runs: dict[str, list[dict]],
    drift_rounds: list[int],
    path: Path,
    title: str | None = None,
    key: str = "test_accuracy",
    lr_key: str = "eff_lr_mean",
) -> Path:
    """Accuracy against rounds (drift rounds dashed) above the effective server lr."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = new_figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    drawn_lr = False
    for i, (name, metrics) in enumerate(runs.items()):
        x, y = _series(metrics, key)
        (line,) = top.plot(x, y, label=name, **line_style(i, len(x)))
        x, y = _series(metrics, lr_key)
        if x:
            bottom.plot(x, y, color=line.get_color(), **line_style(i, len(x)))
            drawn_lr = True
    for ax in (top, bottom):
        for r in drift_rounds:
            ax.axvline(r, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    top.set_ylabel(key.replace("_", " "))
    top.legend(fontsize=8, loc="lower right")
    if drawn_lr:
        log_axis(bottom)  # ticks as plain numbers (0.01, 0.1), not powers of ten
    bottom.set_ylabel("effective server lr\nη / denominator (mean)")
    bottom.set_xlabel("round")
    if title:
        top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def drift_report(run_dir: Path, drift_cfg, rounds: int, metrics: list[dict]) -> list[str]:
    """Markdown lines for a run's report: the per-drift table and ``drift.png``.

    ``drift_cfg`` is the experiment's :class:`~fedtune.data.drift.DriftConfig`; only its
    schedule is needed to know the drift rounds.
    """
    from fedtune.data.drift import SCHEDULES

    points = SCHEDULES.get(drift_cfg.schedule)(drift_cfg).drift_rounds(rounds)
    rows = drift_metrics(metrics, points)
    if not rows:
        return []

    def fmt(value, digits: int = 4) -> str:
        return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    lines = [
        "",
        f"## Concept drift ({drift_cfg.kind}, {drift_cfg.schedule})",
        "",
        "| drift round | accuracy before | lowest after | rounds to 95 % | post-drift AUC |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['drift_round']} | {fmt(r['pre_accuracy'])} | {fmt(r['lowest_accuracy'])} | "
            f"{fmt(r['recovery_rounds'])} | {fmt(r['auc'])} |"
        )
    plot = plot_drift({run_dir.name: metrics}, points, Path(run_dir) / "drift.png")
    return lines + ["", f"![drift]({plot.name})"]
