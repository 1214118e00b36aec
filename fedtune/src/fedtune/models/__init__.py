"""Model registry and the one entry point that builds a model for a dataset."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from fedtune.config import ConfigError
from fedtune.data.base import DatasetInfo
from fedtune.models import small  # noqa: F401  (registers the small models)
from fedtune.models.registry import MODELS
from fedtune.seeding import derive_seed


def build_model(name: str, info: DatasetInfo, options: dict | None = None, seed: int = 0) -> nn.Module:
    """Build ``name`` (registered, or ``hf:<id-or-path>``) for ``info``, seeded by ``seed``."""
    options = dict(options or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        if name.startswith("hf:"):
            from fedtune.models.hf import build_hf_model

            return build_hf_model(name.removeprefix("hf:"), info, **options)
        builder = MODELS.get(name)
        accepted = [k for k in inspect.signature(builder).parameters if k != "info"]
        for key in options:
            if key not in accepted:
                raise ConfigError(f"model.options.{key}: {name} takes no such option; it takes {', '.join(accepted) or 'none'}")
        return builder(info, **options)


__all__ = ["MODELS", "build_model"]
