"""Server-side plots of the dashboard (matplotlib, Agg backend, PNG bytes).

Each plot compares the two conditions; ``PLOTS`` maps a name to its renderer so the
admin router serves ``/admin/plots/<name>.png`` without a chain of ifs.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

from communitybots.analytics import CONDITIONS
from communitybots.store import QUALITY_PARTS

COLOURS = {"multi": "#2f5fb3", "single": "#d9822b"}
LABELS = {"multi": "multi-agent", "single": "single-agent"}
_lock = threading.Lock()  # pyplot's state is global: one figure at a time


def _figure(width: float = 6.4, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes,
            color="#777")


def plot_funnel(s: dict[str, Any], topic_titles: dict[str, str]) -> bytes:
    """Share of each condition's participants who reached each topic (drop-off)."""
    plt, fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    any_data = False
    for c in CONDITIONS:
        n = s["conditions"][c]["participants"]
        rows = s["topics"][c]
        if not n:
            continue
        any_data = True
        ax.plot(range(len(rows)), [r["reached"] / n for r in rows], marker="o",
                color=COLOURS[c], label=f"{LABELS[c]} (n={n})")
    rows = s["topics"][CONDITIONS[0]]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([topic_titles.get(r["topic_id"], r["topic_id"]) for r in rows],
                       rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("reached the topic")
    ax.set_title("Drop-off through the topics")
    if any_data:
        ax.legend(fontsize=8)
    else:
        _empty(ax)
    return _png(plt, fig)


def plot_words(s: dict[str, Any], _titles: dict[str, str]) -> bytes:
    """Words per answer, box plot per condition."""
    plt, fig = _figure(4.8, 3.6)
    ax = fig.add_subplot()
    samples = [s["conditions"][c]["_words"] for c in CONDITIONS]
    if any(samples):
        bp = ax.boxplot([x or [0] for x in samples], patch_artist=True, showfliers=True)
        ax.set_xticks([1, 2], [LABELS[c] for c in CONDITIONS])
        for patch, c in zip(bp["boxes"], CONDITIONS, strict=True):
            patch.set_facecolor(COLOURS[c])
            patch.set_alpha(0.5)
    else:
        _empty(ax)
    ax.set_ylabel("words per answer")
    ax.set_title("Answer length")
    return _png(plt, fig)


def plot_quality(s: dict[str, Any], _titles: dict[str, str]) -> bytes:
    """Distributions of each response-quality part, per condition."""
    plt, fig = _figure(9.0, 5.0)
    for i, part in enumerate(QUALITY_PARTS):
        ax = fig.add_subplot(2, 3, i + 1)
        samples = [s["conditions"][c]["_quality"][part] for c in CONDITIONS]
        if any(samples):
            for c, x in zip(CONDITIONS, samples, strict=True):
                if x:
                    ax.hist(x, bins=10, range=(0, 1), alpha=0.5, color=COLOURS[c],
                            label=LABELS[c], density=True)
        else:
            _empty(ax)
        ax.set_title(part, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0 and any(samples):
            ax.legend(fontsize=7)
    fig.suptitle("Response quality of answers (density)", fontsize=10)
    return _png(plt, fig)


def plot_rates(s: dict[str, Any], _titles: dict[str, str]) -> bytes:
    """Completion, skip and interruption rates, per condition."""
    plt, fig = _figure(5.6, 3.6)
    ax = fig.add_subplot()
    measures = [("completion_rate", "completion"), ("skip_rate", "skips / topic"),
                ("interruption_rate", "interruptions / topic")]
    width = 0.38
    for j, c in enumerate(CONDITIONS):
        values = [s["conditions"][c][key] or 0.0 for key, _ in measures]
        ax.bar([i + (j - 0.5) * width for i in range(len(measures))], values, width,
               color=COLOURS[c], label=LABELS[c])
    ax.set_xticks(range(len(measures)), [label for _, label in measures])
    ax.set_ylim(0, 1.05)
    ax.set_title("Completion, skips and interruptions")
    ax.legend(fontsize=8)
    return _png(plt, fig)


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any], dict[str, str]], bytes]]] = {
    "funnel": ("Share of participants reaching each topic", plot_funnel),
    "words": ("Words per answer", plot_words),
    "quality": ("Response-quality parts of answers", plot_quality),
    "rates": ("Completion, skip and interruption rates", plot_rates),
}


def render(name: str, s: dict[str, Any], topic_titles: dict[str, str]) -> bytes:
    _caption, renderer = PLOTS[name]
    with _lock:
        return renderer(s, topic_titles)
