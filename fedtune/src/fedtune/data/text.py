"""Text tasks from Shakespeare's plays for language models (the Spry experiments).

Spry (Panchal et al., NeurIPS 2024, arXiv 2405.15551) finetunes language models on
text classification and language modelling. These two datasets build such tasks
offline from the plays parsed by :func:`fedtune.data.shakespeare.parse_speeches`,
tokenized with :func:`fedtune.models.hf.load_tokenizer` (an alias such as ``minilm`` or
``smollm2``, a Hugging Face id or a local folder; an experiment with an ``hf:`` model
defaults ``tokenizer`` to that model's own):

- ``shakespeare_play``: sequence classification, *which play a speech comes from*
  (real labels). Speeches of at least ``min_chars`` characters from the ``num_plays``
  plays with most such speeches (or the listed ``plays``), at most ``max_per_play`` each
  (a seeded sample). No natural owner: partition it with ``dirichlet`` (label skew) or
  ``iid`` through the ``[data]`` table.
- ``shakespeare_lm``: next-token prediction for causal LMs, one natural group per
  speaking role (``partition = "natural"``): each role's speeches are joined, tokenized
  and cut into sequences of ``max_length`` tokens; ``labels[:, t]`` is the token after
  position t (aligned with the logits, as :mod:`fedtune.models.hf` expects), -100 on padding.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import torch
from pydantic import Field

from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset
from fedtune.data.shakespeare import Speech, parse_speeches, roles_with_text
from fedtune.errors import ConfigError
from fedtune.seeding import numpy_rng


class PlayOptions(DatasetOptions):
    """Options of ``shakespeare_play``."""

    tokenizer: str = Field(
        "minilm", description="tokenizer: alias (minilm, smollm2), Hugging Face id or folder"
    )
    max_length: int = Field(64, ge=4, description="tokens per speech (longer ones are truncated)")
    num_plays: int = Field(
        8, ge=2, description="classes: the plays with most speeches of at least min_chars"
    )
    plays: list[str] | None = Field(
        None, description="explicit plays (file stems, e.g. hamlet) instead of num_plays"
    )
    min_chars: int = Field(80, ge=1, description="keep speeches of at least this many characters")
    max_per_play: int | None = Field(
        400, ge=1, description="cap on speeches per play (a seeded sample), None for all"
    )


class LMOptions(DatasetOptions):
    """Options of ``shakespeare_lm``."""

    tokenizer: str = Field(
        "smollm2", description="tokenizer: alias (smollm2, minilm), Hugging Face id or folder"
    )
    max_length: int = Field(64, ge=2, description="tokens per sequence")
    min_chars: int = Field(
        2000, ge=1, description="keep roles that speak at least this many characters"
    )
    max_roles: int | None = Field(
        50, ge=1, description="keep this many roles (a seeded sample), None for all"
    )
    max_sequences_per_role: int | None = Field(
        32, ge=1, description="cap on sequences per role (a seeded sample)"
    )


@lru_cache(maxsize=4)
def _tokenizer(name: str):
    from fedtune.models.hf import load_tokenizer

    try:
        return load_tokenizer(name)
    except ConfigError:  # already one line naming data.options.tokenizer
        raise
    except (OSError, ValueError, ModuleNotFoundError) as err:
        raise ConfigError(
            f"data.options.tokenizer: cannot load tokenizer {name!r} ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None


def choose_plays(speeches: list[Speech], opts: PlayOptions) -> list[str]:
    """The class names: ``opts.plays`` if given, else the plays with most kept speeches."""
    counts = Counter(s.play for s in speeches if len(s.text) >= opts.min_chars)
    if opts.plays is not None:
        unknown = [p for p in opts.plays if p not in counts]
        if unknown:
            raise ConfigError(
                f"data.options.plays: unknown or empty plays {unknown}; choose among {', '.join(sorted(counts))}"
            )
        return list(opts.plays)
    if opts.num_plays > len(counts):
        raise ConfigError(
            f"data.options.num_plays: only {len(counts)} plays have speeches of {opts.min_chars} characters"
        )
    return sorted(counts, key=lambda p: (-counts[p], p))[: opts.num_plays]


@register_dataset("shakespeare_play", PlayOptions)
def load_shakespeare_play(options: dict, seed: int) -> RawDataset:
    """Which play a speech comes from; see the module docstring."""
    opts = parse_options(PlayOptions, options, "shakespeare_play")
    speeches = parse_speeches()
    plays = choose_plays(speeches, opts)
    texts: list[str] = []
    labels: list[int] = []
    for label, play in enumerate(plays):
        kept = [s.text for s in speeches if s.play == play and len(s.text) >= opts.min_chars]
        if opts.max_per_play is not None and len(kept) > opts.max_per_play:
            chosen = numpy_rng(seed, "shakespeare-play-speeches", label).choice(
                len(kept), opts.max_per_play, replace=False
            )
            kept = [kept[i] for i in sorted(chosen)]
        texts += kept
        labels += [label] * len(kept)
    return tokenized_classification("shakespeare_play", texts, labels, plays, opts.tokenizer, opts.max_length)


def tokenized_classification(
    name: str, texts: list[str], labels: list[int], classes: list[str], tokenizer: str, max_length: int
) -> RawDataset:
    """A text classification dataset: ``texts`` padded and truncated to ``max_length`` tokens
    by ``tokenizer`` (an alias or a folder), one label index into ``classes`` each."""
    tok = _tokenizer(tokenizer)
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    info = DatasetInfo(
        name=name,
        task="classification",
        num_classes=len(classes),
        class_names=classes,
        tokenizer=tok,
        extra={"tokenizer": tokenizer, "max_length": max_length},
    )
    examples = Examples(
        {
            "input_ids": enc["input_ids"].long(),
            "attention_mask": enc["attention_mask"].long(),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
    )
    return RawDataset(info=info, examples=examples, groups=None)


def token_sequences(
    ids: list[int], max_length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a token stream into (input_ids, attention_mask, labels) rows of ``max_length``.

    Row i reads tokens [i·T, (i+1)·T) and predicts tokens [i·T+1, (i+1)·T+1); the last
    row is padded (mask 0, label -100). A stream of fewer than 2 tokens gives no row.
    """
    n = max(len(ids) - 1, 0)
    rows = -(-n // max_length)
    inputs = np.full((rows, max_length), pad_id, dtype=np.int64)
    mask = np.zeros((rows, max_length), dtype=np.int64)
    labels = np.full((rows, max_length), -100, dtype=np.int64)
    arr = np.asarray(ids, dtype=np.int64)
    for r in range(rows):
        start, stop = r * max_length, min((r + 1) * max_length, n)
        inputs[r, : stop - start] = arr[start:stop]
        mask[r, : stop - start] = 1
        labels[r, : stop - start] = arr[start + 1 : stop + 1]
    return inputs, mask, labels


@register_dataset("shakespeare_lm", LMOptions)
def load_shakespeare_lm(options: dict, seed: int) -> RawDataset:
    """Next-token prediction, one natural group per speaking role; see the module docstring."""
    opts = parse_options(LMOptions, options, "shakespeare_lm")
    texts, keys = roles_with_text(opts.min_chars, opts.max_roles, seed, "shakespeare-lm-roles")
    tok = _tokenizer(opts.tokenizer)
    pad_id = int(tok.pad_token_id)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    groups: list[np.ndarray] = []
    for group, key in enumerate(keys):
        ids = tok(texts[key], add_special_tokens=False, verbose=False)["input_ids"]
        inputs, mask, labels = token_sequences(ids, opts.max_length, pad_id)
        if opts.max_sequences_per_role is not None and len(inputs) > opts.max_sequences_per_role:
            keep = np.sort(
                numpy_rng(seed, "shakespeare-lm-sequences", group).choice(
                    len(inputs), opts.max_sequences_per_role, replace=False
                )
            )
            inputs, mask, labels = inputs[keep], mask[keep], labels[keep]
        parts.append((inputs, mask, labels))
        groups.append(np.full(len(inputs), group))
    info = DatasetInfo(
        name="shakespeare_lm",
        task="causal_lm",
        num_classes=len(tok),
        tokenizer=tok,
        extra={
            "tokenizer": opts.tokenizer,
            "max_length": opts.max_length,
            "roles": [f"{p}/{r}" for p, r in keys],
        },
    )
    examples = Examples(
        {
            "input_ids": torch.from_numpy(np.concatenate([p[0] for p in parts])),
            "attention_mask": torch.from_numpy(np.concatenate([p[1] for p in parts])),
            "labels": torch.from_numpy(np.concatenate([p[2] for p in parts])),
        }
    )
    return RawDataset(info=info, examples=examples, groups=np.concatenate(groups))


__all__ = [
    "LMOptions",
    "PlayOptions",
    "choose_plays",
    "load_shakespeare_lm",
    "load_shakespeare_play",
    "token_sequences",
]
