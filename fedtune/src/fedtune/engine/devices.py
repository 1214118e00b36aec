"""Where tensors live: ``device = "auto" | "cpu" | "cuda" | "cuda:N"`` of an experiment."""

from __future__ import annotations

import torch

from fedtune.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto``: the first GPU when one is available, else the CPU; otherwise ``name``.

    Raises :class:`ConfigError` for a CUDA device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f'device: {name!r} but this machine has no CUDA GPU; use "cpu" or "auto"')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} but this machine has {torch.cuda.device_count()} CUDA GPUs")
    return device
