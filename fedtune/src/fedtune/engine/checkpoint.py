"""Checkpoints: the global trainable state and the algorithm's server state after a round.

Files are written to a temporary name and renamed, so a crash never leaves a partial
checkpoint; the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(run_dir: Path, round: int, global_state: dict, algorithm_state: dict, keep: int) -> Path:
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round_{round:05d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"round": round, "global_state": global_state, "algorithm": algorithm_state}, tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("round_*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / CHECKPOINT_DIR).glob("round_*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
