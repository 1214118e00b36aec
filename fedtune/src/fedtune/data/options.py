"""Typed per-dataset options: each loader declares a pydantic model of what it accepts.

``parse_options(Model, options, dataset)`` turns ``data.options`` into that model and
reports an unknown key or a bad value as one :class:`~fedtune.errors.ConfigError` line
naming the field (``data.options.seq_len: ...``).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedtune.errors import ConfigError


class DatasetOptions(BaseModel):
    """Base class of a dataset's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=DatasetOptions)


def parse_options(model: type[OptionsT], options: dict | None, dataset: str) -> OptionsT:
    """Validate ``options`` against ``model``; raise a one-line ConfigError naming the key."""
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        accepted = ", ".join(model.model_fields) or "none"
        if first["type"] == "extra_forbidden":
            raise ConfigError(
                f"data.options.{key}: dataset {dataset!r} has no such option; it accepts: {accepted}"
            ) from None
        raise ConfigError(
            f"data.options.{key}: {first['msg'].removeprefix('Value error, ')}"
        ) from None


class NoOptions(DatasetOptions):
    """For datasets that take no options."""
