"""Summaries of runs: one row per run, shown as a rich table and written as Markdown."""

from __future__ import annotations

from fedtune.report.plots import series

COLUMNS = [
    ("run", "run"),
    ("rounds", "rounds"),
    ("final_test_accuracy", "test acc"),
    ("best_test_accuracy", "best acc"),
    ("final_test_loss", "test loss"),
    ("personalized_accuracy", "pers. acc"),
    ("mb_up_per_round", "MB up/rnd"),
    ("rounds_to_target", "rounds to target"),
    ("s_to_target", "s to target"),
    ("mb_to_target", "MB to target"),
    ("failures", "failures"),
    ("wall_s", "wall s"),
]


def to_target(metrics: list[dict], target: float, key: str = "test_accuracy") -> dict:
    """What it took to reach ``target`` (first evaluated round with ``key`` ≥ target):
    that round, the seconds of all rounds up to it (``wall_s``), and the MB sent both ways
    up to it (``bytes_up + bytes_down``); all None when the run never reached it."""
    seconds = mb = 0.0
    for m in metrics:
        seconds += m.get("wall_s", 0.0)
        mb += (m.get("bytes_up", 0) + m.get("bytes_down", 0)) / 1e6
        value = m.get(key)
        if isinstance(value, int | float) and value >= target:
            return {"rounds_to_target": m["round"], "s_to_target": seconds, "mb_to_target": mb}
    return {"rounds_to_target": None, "s_to_target": None, "mb_to_target": None}


def summarize(name: str, metrics: list[dict], target: float | None = None) -> dict:
    """Headline numbers of one run's metrics; with ``target`` (a test accuracy) also the
    rounds, seconds and MB it took to reach it (:func:`to_target`)."""
    _, acc = series(metrics, "test_accuracy")
    _, loss = series(metrics, "test_loss")
    _, pers = series(metrics, "personalized_accuracy")
    rounds = sum(1 for m in metrics if m["round"] >= 1)  # round 0: the initial model's evaluation
    return {
        "run": name,
        "rounds": rounds,
        "final_test_accuracy": acc[-1] if acc else None,
        "best_test_accuracy": max(acc) if acc else None,
        "final_test_loss": loss[-1] if loss else None,
        "personalized_accuracy": pers[-1] if pers else None,
        "mb_up_per_round": sum(m.get("bytes_up", 0) for m in metrics) / max(rounds, 1) / 1e6,
        "failures": sum(len(m.get("failures", [])) for m in metrics),
        "wall_s": sum(m.get("wall_s", 0.0) for m in metrics),
        **(to_target(metrics, target) if target is not None else {}),
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The columns some row has a value for; the to-target columns whenever a target was
    asked for (a run that never reached it shows –)."""
    return [c for c in COLUMNS if any(r.get(c[0]) is not None or (c[0].endswith("_to_target") and c[0] in r) for r in rows)]


def markdown_table(rows: list[dict]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: list[dict], title: str = "Results"):
    from rich.table import Table

    cols = _columns(rows)
    table = Table(title=title)
    for key, header in cols:
        table.add_column(header, justify="left" if key == "run" else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(k)) for k, _ in cols))
    return table
