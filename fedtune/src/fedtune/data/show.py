"""What a partition looks like: per-client counts and a label-distribution plot.

``fedtune datasets show NAME --partition ...`` prints :func:`describe`'s rows and saves
:func:`plot_label_distribution`'s figure (clients on the x axis, one stacked colour per
class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedtune.data.base import FederatedDataset


@dataclass
class ClientSummary:
    """One client's example counts; ``label_counts`` covers all three splits."""

    client: int
    train: int
    val: int
    test: int
    label_counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.train + self.val + self.test

    def as_row(self) -> dict[str, int | str]:
        """A flat row: client, train, val, test, total, then one column per class."""
        row: dict[str, int | str] = {
            "client": self.client,
            "train": self.train,
            "val": self.val,
            "test": self.test,
            "total": self.total,
        }
        row.update(self.label_counts)
        return row


def _class_names(fed: FederatedDataset) -> list[str]:
    names = fed.info.class_names
    return [str(n) for n in names] if names else [str(c) for c in range(fed.info.num_classes)]


def _label_matrix(fed: FederatedDataset) -> np.ndarray:
    """(clients, classes) counts of one-label-per-example datasets; zero columns otherwise."""
    counts = np.zeros((fed.num_clients, fed.info.num_classes), dtype=np.int64)
    for i, client in enumerate(fed.clients):
        for split in (client.train, client.val, client.test):
            if len(split) and split.labels.ndim == 1:
                counts[i] += np.bincount(split.labels.numpy(), minlength=fed.info.num_classes)[
                    : fed.info.num_classes
                ]
    return counts


def client_summaries(fed: FederatedDataset) -> list[ClientSummary]:
    """Per-client train/val/test sizes and label counts (labels only for classification)."""
    names = _class_names(fed)
    matrix = _label_matrix(fed)
    classified = fed.info.task == "classification"
    return [
        ClientSummary(
            client=i,
            train=len(c.train),
            val=len(c.val),
            test=len(c.test),
            label_counts={names[k]: int(matrix[i, k]) for k in range(len(names))}
            if classified
            else {},
        )
        for i, c in enumerate(fed.clients)
    ]


def describe(fed: FederatedDataset, max_label_columns: int = 20) -> list[dict[str, int | str]]:
    """One row per client: client, train, val, test, total, then its count of each class.

    With more than ``max_label_columns`` classes (Shakespeare's characters) the per-class
    columns are replaced by ``classes``, the number of distinct labels the client holds.
    """
    rows = []
    for summary in client_summaries(fed):
        row = summary.as_row()
        if len(summary.label_counts) > max_label_columns:
            row = {k: row[k] for k in ("client", "train", "val", "test", "total")}
            row["classes"] = sum(1 for v in summary.label_counts.values() if v)
        rows.append(row)
    return rows


def summarize(fed: FederatedDataset) -> dict[str, float | int | str]:
    """Totals over clients: number, sizes (min / median / max) and the mean label skew.

    Label skew is the mean total-variation distance between a client's label
    distribution and the pooled one (0: identical, 1: disjoint).
    """
    rows = client_summaries(fed)
    sizes = np.array([r.total for r in rows])
    out: dict[str, float | int | str] = {
        "dataset": fed.info.name,
        "clients": fed.num_clients,
        "examples": int(sizes.sum()),
        "train": sum(r.train for r in rows),
        "val": sum(r.val for r in rows),
        "test": sum(r.test for r in rows),
        "min_per_client": int(sizes.min()),
        "median_per_client": float(np.median(sizes)),
        "max_per_client": int(sizes.max()),
    }
    matrix = _label_matrix(fed)
    if fed.info.task == "classification" and matrix.sum() > 0:
        pooled = matrix.sum(0) / matrix.sum()
        local = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        out["label_skew"] = round(float(0.5 * np.abs(local - pooled).sum(1).mean()), 4)
    return out


def empty_splits(fed: FederatedDataset) -> dict[str, list[int]]:
    """The clients whose validation or test split is empty (``{"val": [...], "test": [...]}``):
    early stopping has nothing to watch there, and the personalized figure nothing to test."""
    return {
        "val": [i for i, c in enumerate(fed.clients) if len(c.val) == 0],
        "test": [i for i, c in enumerate(fed.clients) if len(c.test) == 0],
    }


def partition_label(partition: str, alpha: float, clients: int, seed: int) -> str:
    """``dirichlet_a0.3_100c_seed0``: a partition as a file-name part (α only for dirichlet)."""
    a = f"_a{alpha:g}" if partition == "dirichlet" else ""
    return f"{partition}{a}_{clients}c_seed{seed}"


def plot_label_distribution(
    fed: FederatedDataset, path: str | Path, max_clients: int = 100, max_classes: int = 10, title: str | None = None
) -> Path:
    """Save stacked bars of each client's examples per class to ``path`` (PNG, SVG, PDF).

    At most ``max_clients`` clients (the first ones) are drawn; beyond ``max_classes``
    the least frequent classes are merged into "other". ``title``: what the figure's title
    adds after the dataset's name (its partition).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _class_names(fed)
    matrix = _label_matrix(fed)[:max_clients]
    if fed.info.task != "classification" or matrix.sum() == 0:
        matrix = np.array([[r.total] for r in client_summaries(fed)[:max_clients]])
        names = ["examples"]
    elif matrix.shape[1] > max_classes:
        top = np.argsort(-matrix.sum(0), kind="stable")[: max_classes - 1]
        rest = np.setdiff1d(np.arange(matrix.shape[1]), top)
        matrix = np.column_stack([matrix[:, top], matrix[:, rest].sum(1)])
        names = [names[k] for k in top] + ["other"]
    clients = np.arange(len(matrix))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(clients) + 2), 4))
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    bottom = np.zeros(len(clients))
    for k, name in enumerate(names):
        ax.bar(
            clients,
            matrix[:, k],
            bottom=bottom,
            width=0.9,
            color=colors(k % colors.N),
            label=name if name.strip() else repr(name),
        )
        bottom += matrix[:, k]
    ax.set_xlabel("client")
    ax.set_ylabel("examples")
    ax.set_title(f"{fed.info.name}{', ' + title if title else ''}: examples per client and class ({fed.num_clients} clients)")
    ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["ClientSummary", "client_summaries", "describe", "empty_splits", "partition_label", "plot_label_distribution", "summarize"]
