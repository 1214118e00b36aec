"""Seeded client sampling: the same (seed, round) always picks the same clients."""

from __future__ import annotations

from fedtune.seeding import numpy_rng


def sample_clients(seed: int, round: int, num_clients: int, per_round: int) -> list[int]:
    """``per_round`` distinct client ids drawn uniformly without replacement, sorted."""
    if per_round >= num_clients:
        return list(range(num_clients))
    rng = numpy_rng(seed, "sample-clients", round)
    return sorted(int(c) for c in rng.choice(num_clients, size=per_round, replace=False))
