"""Checkpoints: the global trainable state and the server's state after a round.

The server's state is the algorithm's (its server optimizer's moments, ...) and the
client-state store's. Files are written to a temporary name and renamed, so a crash
never leaves a partial checkpoint; the newest ``keep`` checkpoints are kept. Tensors
are saved on the CPU, so a checkpoint moves between machines with or without a GPU.

Checkpoints load with ``weights_only=True``: only tensors and plain containers
(dict, list, tuple, str, int, float, bool, None) come back, so a checkpoint from
someone else cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from fedtune.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(run_dir: Path, round: int, global_state: dict, server_state: dict, keep: int) -> Path:
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round_{round:05d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(_to_cpu({"round": round, "global_state": global_state, "server": server_state}), tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("round_*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / CHECKPOINT_DIR).glob("round_*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents; a :class:`ConfigError` for a file that holds more than weights."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"--resume: {path} holds objects other than tensors and plain data; refused, since loading them could run code"
        ) from None
