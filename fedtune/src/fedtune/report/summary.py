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
    ("failures", "failures"),
    ("wall_s", "wall s"),
]


def summarize(name: str, metrics: list[dict]) -> dict:
    """Headline numbers of one run's metrics."""
    _, acc = series(metrics, "test_accuracy")
    _, loss = series(metrics, "test_loss")
    _, pers = series(metrics, "personalized_accuracy")
    rounds = len(metrics)
    return {
        "run": name,
        "rounds": rounds,
        "final_test_accuracy": acc[-1] if acc else None,
        "best_test_accuracy": max(acc) if acc else None,
        "final_test_loss": loss[-1] if loss else None,
        "personalized_accuracy": pers[-1] if pers else None,
        "mb_up_per_round": sum(m["bytes_up"] for m in metrics) / max(rounds, 1) / 1e6,
        "failures": sum(len(m["failures"]) for m in metrics),
        "wall_s": sum(m.get("wall_s", 0.0) for m in metrics),
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: list[dict], title: str = "Results"):
    from rich.table import Table

    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    table = Table(title=title)
    for key, header in cols:
        table.add_column(header, justify="left" if key == "run" else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(k)) for k, _ in cols))
    return table
