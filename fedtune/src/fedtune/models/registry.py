"""The model registry: a name maps to ``build(info: DatasetInfo, **options) -> nn.Module``.

Every model follows ``fedtune.models.base``: ``forward(batch) -> logits`` and its
trainable parameters are exactly those with ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedtune.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")
