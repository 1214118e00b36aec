"""The example experiments that ship with fedtune (``fedtune examples list|copy``).

They live in the source tree's ``examples/`` folder (what the README and the Makefile
name); the package carries the same files as package data under ``fedtune/examples``
(a link to that folder in the source tree), so an installed fedtune has them too. An
example is a ``.toml`` experiment at the top, or a folder (a plugin with its experiment).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fedtune.errors import ConfigError


def examples_dir() -> Path:
    """The folder holding the examples: the package's own copy."""
    return Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Example:
    name: str
    path: Path
    description: str


def _description(path: Path) -> str:
    """The first sentence of an experiment's opening comment (of a folder: of its first
    .toml besides pyproject.toml)."""
    if path.is_dir():
        tomls = sorted(p for p in path.glob("*.toml") if p.name != "pyproject.toml")
        if not tomls:
            return ""
        path = tomls[0]
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text


def list_examples() -> list[Example]:
    """Every example, by name (file stem or folder name), sorted."""
    root = examples_dir()
    found = [p for p in root.iterdir() if (p.suffix == ".toml" and p.is_file()) or (p.is_dir() and not p.name.startswith((".", "_")))]
    return sorted((Example(p.stem if p.is_file() else p.name, p, _description(p)) for p in found), key=lambda e: e.name)


def copy_examples(names: list[str], to: Path, overwrite: bool = False) -> list[Path]:
    """Copy the named examples (all when ``names`` is empty) into ``to``; returns what was
    written. An existing file is an error unless ``overwrite``: nothing is copied then."""
    known = {e.name: e for e in list_examples()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"examples: no example named {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(known.values())
    targets = [(e.path, to / e.path.name) for e in chosen]
    if not overwrite:
        clash = [str(t) for _, t in targets if t.exists()]
        if clash:
            raise ConfigError(f"examples: {', '.join(clash)} already exists; pass --overwrite to replace it")
    to.mkdir(parents=True, exist_ok=True)
    for source, target in targets:
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    return [t for _, t in targets]


__all__ = ["Example", "copy_examples", "examples_dir", "list_examples"]
