"""Partitioners: assign every example of a dataset to exactly one client.

A partitioner has the signature ``partition(labels, groups, num_clients, alpha, rng)``
and returns one sorted ``int64`` index array per client; together the arrays hold every
example index exactly once and none of them is empty. They are registered by name in
:data:`PARTITIONERS` (``iid``, ``dirichlet``, ``natural``).

- ``iid``: a seeded shuffle cut into ``num_clients`` near-equal shares.
- ``dirichlet``: label skew with a Dirichlet(α) prior, the non-IID benchmark of
  Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for
  Federated Visual Classification" (2019, https://arxiv.org/abs/1909.06335). We use the
  per-class form that Flower Datasets' ``DirichletPartitioner`` and NIID-Bench
  (Li et al. 2022) implement: for every class k, proportions p_k ~ Dir_N(α) over the N
  clients split that class's examples. Small α gives each client few classes; large α
  approaches IID. Draws that leave a client below a minimum size are redrawn, and a
  final repair moves single examples from the largest clients to any still-empty one.
- ``natural``: one client per natural group (writer, speaking role, generating user).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedtune.errors import ConfigError, UnknownNameError
from fedtune.registry import Registry

Partitioner = Callable[
    [np.ndarray, "np.ndarray | None", int, float, np.random.Generator], list[np.ndarray]
]
PARTITIONERS: Registry[Partitioner] = Registry("partition")

#: how many times ``dirichlet`` redraws the proportions before repairing the last draw
DIRICHLET_MAX_DRAWS = 100


def _check_count(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"data.num_clients: must be at least 1, got {num_clients}")
    if num_clients > n:
        raise ConfigError(
            f"data.num_clients: {num_clients} clients but the dataset has only {n} examples; "
            "use at most that many clients"
        )


def iid(
    labels: np.ndarray,
    groups: np.ndarray | None,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Shuffle all examples and cut them into ``num_clients`` shares whose sizes differ by at most one."""
    n = len(labels)
    _check_count(n, num_clients)
    return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]


def dirichlet_min_size(n: int, num_clients: int) -> int:
    """The smallest client a ``dirichlet`` draw may produce before it is redrawn.

    Ten examples (NIID-Bench's and Flower's default) when clients hold at least twenty
    on average; otherwise half the mean size, and at least one.
    """
    return max(1, min(10, n // (2 * num_clients)))


def dirichlet(
    labels: np.ndarray,
    groups: np.ndarray | None,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Dirichlet(α) label-skew partition (Hsu et al. 2019; per-class form, see module doc).

    For each class, proportions over clients come from Dir(α·1_N); as in NIID-Bench a
    client that already holds its fair share ``n / N`` receives no more of later classes.
    The draw is repeated (from the same seeded generator) until every client holds at
    least :func:`dirichlet_min_size` examples; if none of :data:`DIRICHLET_MAX_DRAWS` draws
    does, the last one is repaired so that no client is empty.
    """
    if not alpha > 0:
        raise ConfigError(f"data.alpha: the Dirichlet concentration must be positive, got {alpha}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError(
            "data.partition: 'dirichlet' needs one class label per example, and this dataset "
            "has sequence labels; use 'iid' or 'natural'"
        )
    n = len(labels)
    _check_count(n, num_clients)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    min_size = dirichlet_min_size(n, num_clients)
    fair_share = n / num_clients
    parts: list[list[int]] = []
    for _ in range(DIRICHLET_MAX_DRAWS):
        parts = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            sizes = np.array([len(p) for p in parts])
            proportions = proportions * (sizes < fair_share)
            total = proportions.sum()
            proportions = (
                proportions / total if total > 0 else np.full(num_clients, 1 / num_clients)
            )
            cuts = (np.cumsum(proportions) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        _repair_empty(parts)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _repair_empty(parts: list[list[int]]) -> None:
    """Give every empty client one example taken from the currently largest client."""
    for client, part in enumerate(parts):
        if not part:
            donor = max(range(len(parts)), key=lambda c: len(parts[c]))
            parts[client].append(parts[donor].pop())


def natural(
    labels: np.ndarray,
    groups: np.ndarray | None,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One client per natural group, in sorted group order; ``num_clients`` is ignored."""
    if groups is None:
        raise ConfigError(
            "data.partition: 'natural' needs a dataset with natural groups "
            "(shakespeare, synthetic, or hf with a group column); use 'iid' or 'dirichlet'"
        )
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return [np.sort(part).astype(np.int64) for part in np.split(order, bounds)]


# Registered here rather than with decorators: mutation testing (``make mutate``, mutmut)
# leaves decorated functions alone, and these three are what the module is about.
for _name, _partitioner in (("iid", iid), ("dirichlet", dirichlet), ("natural", natural)):
    PARTITIONERS.register(_name)(_partitioner)


def partition(
    name: str,
    labels: np.ndarray,
    groups: np.ndarray | None,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Run the registered partitioner ``name``; see the module docstring."""
    try:
        partitioner = PARTITIONERS.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"data.partition: {err}") from None
    return partitioner(np.asarray(labels), groups, num_clients, alpha, rng)


def label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between each client's label distribution and the global one.

    0 for identical distributions; close to 1 when each client holds one rare class.
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    global_dist = np.bincount(inverse, minlength=len(classes)) / len(labels)
    distances = []
    for part in parts:
        dist = np.bincount(inverse[part], minlength=len(classes)) / max(len(part), 1)
        distances.append(0.5 * np.abs(dist - global_dist).sum())
    return float(np.mean(distances))


__all__ = ["PARTITIONERS", "Partitioner", "dirichlet", "iid", "label_skew", "natural", "partition"]
