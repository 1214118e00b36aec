"""``hf:<id-or-path>``: Hugging Face datasets as fedtune datasets.

Loads with :func:`datasets.load_dataset` (Lhoest et al. 2021, https://huggingface.co/docs/datasets):

- a hub id (``hf:ylecun/mnist``) is passed as is, with ``data_files`` when given (needs
  network the first time, then the local cache);
- a local ``.parquet`` / ``.csv`` / ``.json`` / ``.jsonl`` / ``.txt`` file uses the matching
  packaged builder; a local folder is handed to ``load_dataset`` (which finds its files).

Columns become tensors:

- ``text_column``: tokenized with ``tokenizer`` (an offline alias such as ``minilm``, a
  local folder or a hub id; :func:`fedtune.models.hf.load_tokenizer`; an experiment with
  an ``hf:`` model defaults it to that model's own, as for every dataset with a
  ``tokenizer`` option) into ``input_ids`` /
  ``attention_mask``, padded and truncated to ``max_length``; ``text_pair_column`` adds a
  second sequence (premise and hypothesis in SNLI/MNLI). With ``task = "causal_lm"`` the labels are the input ids
  (padding -100) and ``num_classes`` is the vocabulary size.
  Without ``text_column``, ``image_column`` or ``feature_columns``, a table with exactly
  one text column besides the label and group columns uses it (:func:`find_text_column`).
- ``image_column``: images to float ``x`` of shape (C, H, W) in [0, 1] (all one size).
- otherwise the numeric ``feature_columns`` (default: every column but the label and
  group columns) form ``x`` of shape (F,).

``label_column`` holds class ids or names (names are mapped to ids in sorted order, or
by the column's ``ClassLabel`` names). Rows labelled -1 (SNLI's pairs without a gold
label) are dropped unless ``drop_unlabeled = false``. ``group_column`` gives natural groups (writer,
user) for the ``natural`` partition.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fedtune import hub
from fedtune.data.base import DatasetInfo, Examples
from fedtune.data.options import DatasetOptions, parse_options
from fedtune.data.registry import DATASET_OPTIONS, DATASETS, Loader, RawDataset
from fedtune.errors import ConfigError

#: file suffix -> packaged ``datasets`` builder
BUILDERS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".txt": "text",
}


class HFOptions(DatasetOptions):
    """Options of ``hf:<id-or-path>`` datasets."""

    split: str = Field("train", description="which split to load")
    data_files: str | list[str] | dict[str, Any] | None = Field(
        None, description="files passed to load_dataset"
    )
    config: str | None = Field(None, description="the dataset's configuration name (hub datasets)")
    task: Literal["classification", "causal_lm"] = Field(
        "classification", description="what the labels are"
    )
    label_column: str = Field("label", description="column of class ids or names")
    text_column: str | None = Field(None, description="column of text to tokenize")
    text_pair_column: str | None = Field(
        None, description="column of a second text per example (sentence pairs: premise, hypothesis)"
    )
    drop_unlabeled: bool = Field(True, description="drop rows whose label is -1 (no gold label)")
    image_column: str | None = Field(None, description="column of images")
    feature_columns: list[str] | None = Field(
        None, description="numeric columns forming x (default: all others)"
    )
    group_column: str | None = Field(
        None, description="column of natural groups (writer, user, ...)"
    )
    tokenizer: str | None = Field(
        None, description="local tokenizer folder or hub id, for text_column"
    )
    max_length: int = Field(128, ge=1, description="tokens per example (padding and truncation)")
    max_examples: int | None = Field(None, ge=1, description="keep only the first N examples")
    cache_dir: str | None = Field(
        None, description="datasets cache folder (default: the library's)"
    )


def _load_table(source: str, opts: HFOptions):
    from datasets import load_dataset

    path = Path(source).expanduser()
    kwargs: dict[str, Any] = {"split": opts.split, "cache_dir": opts.cache_dir}
    if path.is_file():
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(
                f"data.name: cannot read {path.suffix!r} files; use one of {', '.join(BUILDERS)}"
            )
        if path.suffix.lower() == ".tsv":
            kwargs["delimiter"] = "\t"
        return load_dataset(builder, data_files={opts.split: str(path)}, **kwargs)
    if opts.data_files is not None:
        kwargs["data_files"] = opts.data_files
    with hub.loading(source, "data.name", "dataset"):
        return load_dataset(str(path) if path.is_dir() else source, opts.config, **kwargs)


def _labels(table, column: str) -> tuple[np.ndarray, list[str] | None]:
    if column not in table.column_names:
        raise ConfigError(
            f"data.options.label_column: no column {column!r}; columns are {', '.join(table.column_names)}"
        )
    feature = table.features[column]
    values = table[column]
    names = getattr(feature, "names", None)
    if names is not None:
        return np.asarray(values, dtype=np.int64), list(names)
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        if array.min() < 0:
            raise ConfigError(f"data.options.label_column: {column!r} holds negative class ids")
        return array.astype(np.int64), None
    names = sorted({str(v) for v in values})
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[str(v)] for v in values], dtype=np.int64), names


def _require(table, column: str, field: str) -> None:
    if column not in table.column_names:
        raise ConfigError(
            f"data.options.{field}: no column {column!r}; columns are {', '.join(table.column_names)}"
        )


def _text(table, opts: HFOptions) -> tuple[dict[str, torch.Tensor], object, int]:
    from fedtune.models.hf import load_tokenizer

    _require(table, opts.text_column, "text_column")
    if opts.tokenizer is None:
        raise ConfigError(
            f"data.options.tokenizer: text column {opts.text_column!r} needs a tokenizer (a local folder or hub id)"
        )
    try:
        tokenizer = load_tokenizer(opts.tokenizer)
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"data.options.tokenizer: cannot load {opts.tokenizer!r}: {str(err).splitlines()[0]}"
        ) from None
    pairs = None
    if opts.text_pair_column is not None:
        _require(table, opts.text_pair_column, "text_pair_column")
        pairs = [str(t) for t in table[opts.text_pair_column]]
    encoded = tokenizer(
        [str(t) for t in table[opts.text_column]],
        pairs,
        padding="max_length",
        truncation=True,
        max_length=opts.max_length,
        return_tensors="pt",
    )
    tensors = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if pairs is not None and "token_type_ids" in encoded:  # BERT tells the two sentences apart by these
        tensors["token_type_ids"] = encoded["token_type_ids"]
    return tensors, tokenizer, len(tokenizer)


def _images(table, column: str) -> torch.Tensor:
    _require(table, column, "image_column")
    arrays = []
    for image in table[column]:
        array = np.asarray(image, dtype=np.float32)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    if len({a.shape for a in arrays}) > 1:
        raise ConfigError(
            f"data.options.image_column: images of {column!r} differ in size; resize them first"
        )
    x = np.stack(arrays)
    return torch.from_numpy(x / 255.0 if x.max() > 1 else x)


def _features(table, opts: HFOptions) -> torch.Tensor:
    skip = {opts.label_column, opts.group_column}
    columns = opts.feature_columns or [c for c in table.column_names if c not in skip]
    for c in columns:
        _require(table, c, "feature_columns")
    try:
        x = np.stack([np.asarray(table[c], dtype=np.float32) for c in columns], axis=1)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.options.feature_columns: columns {columns} are not all numeric; "
            "name the numeric ones, or set text_column / image_column"
        ) from None
    return torch.from_numpy(x.reshape(len(x), -1))


def find_text_column(table, opts: HFOptions) -> str | None:
    """The one string column besides the label and group columns, when no column option
    says what ``x`` is; None when there is none or several (name one with text_column)."""
    if opts.text_column is not None or opts.image_column is not None or opts.feature_columns is not None:
        return None
    skip = {opts.label_column, opts.group_column}
    text = [c for c, f in table.features.items() if c not in skip and getattr(f, "dtype", None) in ("string", "large_string")]
    return text[0] if len(text) == 1 else None


def load_hf(source: str, options: dict, seed: int) -> RawDataset:
    """Load ``hf:<source>`` as a :class:`RawDataset`; see the module docstring for the options."""
    opts = parse_options(HFOptions, options, f"hf:{source}")
    table = _load_table(source, opts)
    if opts.max_examples is not None and len(table) > opts.max_examples:
        table = table.select(range(opts.max_examples))
    if opts.task == "classification" and opts.drop_unlabeled and opts.label_column in table.column_names:
        labels = table[opts.label_column]
        if any(isinstance(v, int) and v < 0 for v in labels):
            table = table.select([i for i, v in enumerate(labels) if not (isinstance(v, int) and v < 0)])
    if len(table) == 0:
        raise ConfigError(f"data.name: hf:{source} split {opts.split!r} has no examples")
    if (found := find_text_column(table, opts)) is not None:
        opts = opts.model_copy(update={"text_column": found})
    tokenizer = None
    class_names = None
    if opts.text_column is not None:
        tensors, tokenizer, vocab_size = _text(table, opts)
        input_shape: tuple[int, ...] = ()
    else:
        x = _images(table, opts.image_column) if opts.image_column else _features(table, opts)
        tensors, input_shape = {"x": x.float()}, tuple(x.shape[1:])
    if opts.task == "causal_lm":
        if opts.text_column is None:
            raise ConfigError("data.options.task: causal_lm needs a text_column")
        tensors["labels"] = tensors["input_ids"].masked_fill(tensors["attention_mask"] == 0, -100)
        num_classes = vocab_size
    else:
        labels, class_names = _labels(table, opts.label_column)
        tensors["labels"] = torch.from_numpy(labels)
        num_classes = len(class_names) if class_names else int(labels.max()) + 1
    groups = None
    if opts.group_column is not None:
        _require(table, opts.group_column, "group_column")
        groups = np.asarray([str(g) for g in table[opts.group_column]])
    info = DatasetInfo(
        name=f"hf:{source}",
        task=opts.task,
        num_classes=num_classes,
        input_shape=input_shape,
        class_names=class_names,
        tokenizer=tokenizer,
        extra={"source": source, "split": opts.split},
    )
    return RawDataset(info=info, examples=Examples(tensors), groups=groups)


@DATASETS.register_prefix(hub.PREFIX, hub.USAGE)
def hf_loader(name: str) -> Loader:
    """``hf:<name>``: :func:`load_hf` for a local file or folder, or a hub id."""
    return functools.partial(load_hf, hub.source(name))


@DATASET_OPTIONS.register_prefix(hub.PREFIX, hub.USAGE)
def hf_options(name: str) -> type[HFOptions]:
    """Every ``hf:<name>`` dataset takes :class:`HFOptions`."""
    return HFOptions


__all__ = ["BUILDERS", "HFOptions", "hf_loader", "hf_options", "load_hf"]
