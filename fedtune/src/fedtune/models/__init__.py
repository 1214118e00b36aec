"""Model registry and the one entry point that builds a model for a dataset.

:data:`MODELS` holds the small models by name and resolves ``hf:<id-or-path>`` to a
Hugging Face model with peft (:mod:`fedtune.models.hf`).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from fedtune.data.base import DatasetInfo
from fedtune.errors import ConfigError, UnknownNameError
from fedtune.models import hf, small  # noqa: F401  (register the small models and hf:<id-or-path>)
from fedtune.models.registry import MODELS
from fedtune.seeding import derive_seed


def build_model(name: str, info: DatasetInfo, options: dict | None = None, seed: int = 0) -> nn.Module:
    """Build ``name`` (registered, or ``hf:<id-or-path>``) for ``info``, seeded by ``seed``."""
    options = dict(options or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        try:
            builder = MODELS.get(name)
        except UnknownNameError as err:
            raise ConfigError(f"model.name: {err}") from None
        accepted = [k for k in inspect.signature(builder).parameters if k != "info"]
        for key in options:
            if key not in accepted:
                raise ConfigError(f"model.options.{key}: {name} takes no such option; it takes {', '.join(accepted) or 'none'}")
        return builder(info, **options)


__all__ = ["MODELS", "build_model"]
