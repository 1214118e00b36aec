"""The store of clients' own state between rounds (personalized and other stateful methods).

The engine owns it: a stateful client procedure is given its state with its task and
returns the new one; only the round's clients load theirs. The store is saved with each
checkpoint, so a resumed run equals an uninterrupted one.

- ``memory``: a dict in the server process, written into every checkpoint (small runs);
- ``disk``: one file per client and round under ``<run>/client_states/<id>/``; a
  checkpoint prunes the versions it no longer needs and a resume drops the versions
  written after the checkpoint it resumes from.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from fedtune.algorithms import ClientState
from fedtune.registry import Registry

CLIENT_STATE_DIR = "client_states"


class ClientStateStore(ABC):
    """Clients' states by id; ``None`` for a client that has none yet."""

    @abstractmethod
    def load(self, client_ids: list[int]) -> dict[int, ClientState | None]: ...

    @abstractmethod
    def save(self, round: int, states: dict[int, ClientState]) -> None: ...

    @abstractmethod
    def checkpoint(self, round: int) -> dict:
        """What a checkpoint after ``round`` holds to restore the store."""

    @abstractmethod
    def restore(self, saved: dict, round: int) -> None:
        """Back to the store as it was at the checkpoint of ``round``."""


CLIENT_STATE_STORES: Registry[type[ClientStateStore]] = Registry("client-state store")


@CLIENT_STATE_STORES.register("memory")
class MemoryStore(ClientStateStore):
    def __init__(self, run_dir: Path) -> None:
        self.states: dict[int, ClientState] = {}

    def load(self, client_ids: list[int]) -> dict[int, ClientState | None]:
        return {cid: self.states.get(cid) for cid in client_ids}

    def save(self, round: int, states: dict[int, ClientState]) -> None:
        self.states.update(states)  # states are replaced, never mutated: no copy needed

    def checkpoint(self, round: int) -> dict:
        return {"states": dict(self.states)}

    def restore(self, saved: dict, round: int) -> None:
        self.states = {int(cid): s for cid, s in saved["states"].items()}


@CLIENT_STATE_STORES.register("disk")
class DiskStore(ClientStateStore):
    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / CLIENT_STATE_DIR

    @staticmethod
    def _round(path: Path) -> int:
        return int(path.stem.removeprefix("round_"))

    def _versions(self, cid: int) -> list[Path]:
        return sorted((self.folder / str(cid)).glob("round_*.pt"))

    def load(self, client_ids: list[int]) -> dict[int, ClientState | None]:
        out: dict[int, ClientState | None] = {}
        for cid in client_ids:
            versions = self._versions(cid)
            out[cid] = torch.load(versions[-1], map_location="cpu", weights_only=True) if versions else None
        return out

    def save(self, round: int, states: dict[int, ClientState]) -> None:
        for cid, state in states.items():
            path = self.folder / str(cid) / f"round_{round:05d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)

    def _clients(self) -> list[int]:
        return sorted(int(p.name) for p in self.folder.iterdir() if p.name.isdigit()) if self.folder.is_dir() else []

    def checkpoint(self, round: int) -> dict:
        for cid in self._clients():  # keep the newest version at or before the checkpoint, and later ones
            kept = [p for p in self._versions(cid) if self._round(p) <= round]
            for old in kept[:-1]:
                old.unlink()
        return {"round": round}

    def restore(self, saved: dict, round: int) -> None:
        for cid in self._clients():
            for newer in (p for p in self._versions(cid) if self._round(p) > round):
                newer.unlink()
