"""Seed derivation, exactly: the values a key path gives are pinned (a run's randomness
must not change between versions) and re-derived here from SeedSequence with Python
integers; every generator uses the run seed as well as the keys."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from fedtune.seeding import derive_seed, numpy_rng, seed_global_rng, torch_generator


def _reference(seed: int, *keys: int | str) -> int:
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in (seed, *keys)]
    hi, lo = (int(x) for x in np.random.SeedSequence(words).generate_state(2, dtype=np.uint32))
    return ((hi << 31) + lo) & ((1 << 63) - 1)


@pytest.mark.parametrize(("seed", "keys", "value"), [
    (0, (), 6375474604893067239),
    (7, ("tangent", 3, 1, 2, "w"), 5529627868211794528),
    (1 << 40, ("x",), 5329835462513452365),
])
def test_pinned_values(seed, keys, value):
    assert derive_seed(seed, *keys) == value == _reference(seed, *keys)
    assert 0 <= value < 1 << 63


def test_reference_on_many_keys():
    for r in range(20):
        assert derive_seed(3, "round", r, "client", r * 7) == _reference(3, "round", r, "client", r * 7)


def test_generators_use_the_seed_and_the_keys():
    draw = lambda rng: int(rng.integers(1 << 62))  # noqa: E731
    assert draw(numpy_rng(5, "a")) == draw(np.random.default_rng(derive_seed(5, "a")))
    assert draw(numpy_rng(1, "a")) != draw(numpy_rng(2, "a"))
    assert draw(numpy_rng(1, "a")) != draw(numpy_rng(1))
    t = lambda g: torch.randn(3, generator=g)  # noqa: E731
    assert torch.equal(t(torch_generator(5, "a")), t(torch.Generator().manual_seed(derive_seed(5, "a"))))
    assert not torch.equal(t(torch_generator(1, "a")), t(torch_generator(2, "a")))
    assert not torch.equal(t(torch_generator(1, "a")), t(torch_generator(1)))


def test_negative_keys_are_refused():
    with pytest.raises(ValueError, match=r"^seed keys must be non-negative, got -1$"):
        derive_seed(0, 3, -1)


def test_seed_global_rng_seeds_torchs_default_generator():
    with torch.random.fork_rng():
        seed_global_rng(4, "dropout", 2)
        a = torch.rand(5)
        seed_global_rng(4, "dropout", 2)
        b = torch.rand(5)
        seed_global_rng(4, "dropout", 3)
        c = torch.rand(5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.rand(5, generator=torch_generator(4, "dropout", 2)))
