"""Every random choice derives from (run seed, purpose, round, client, step, ...).

Keys are hashed with numpy's SeedSequence, so a key tuple always gives the same
stream on every machine, streams of different tuples are independent, and the
server can regenerate any client's randomness (Spry's per-iteration mode relies on it).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

Key = int | str


def _as_int(key: Key) -> int:
    if isinstance(key, str):
        return zlib.crc32(key.encode())  # stable across processes, unlike hash()
    if key < 0:
        raise ValueError(f"seed keys must be non-negative, got {key}")
    return int(key)


def derive_seed(seed: int, *keys: Key) -> int:
    """A 63-bit seed determined by ``seed`` and the key path (round, client, ...)."""
    ss = np.random.SeedSequence([_as_int(seed), *(_as_int(k) for k in keys)])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1 << 31, 1], dtype=np.uint64)) & ((1 << 63) - 1)


def numpy_rng(seed: int, *keys: Key) -> np.random.Generator:
    """A numpy Generator for the given key path."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator for the given key path."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def seed_global_rng(seed: int, *keys: Key) -> None:
    """Seed torch's global generators (dropout and other modules that draw from them).

    Cheaper than ``torch.manual_seed``, which queues seeding of every accelerator
    backend and records a stack trace for each on every call; CUDA is seeded only once
    it is in use.
    """
    value = derive_seed(seed, *keys)
    torch.default_generator.manual_seed(value)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(value)
