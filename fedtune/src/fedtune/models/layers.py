"""A model's layers in forward order: what personalization methods split into parts.

A *layer* is a leaf module that owns parameters (a ``Linear``, ``Conv2d``, ``LSTM``,
``Embedding``, ...). Personalized methods name their parts by layer: FedRep's local head
and LG-FedAvg's global head are the last layers, Flow routes chosen layers.
"""

from __future__ import annotations

from torch import nn

from fedtune.errors import ConfigError


def parameterized_layers(model: nn.Module) -> list[str]:
    """Names of the leaf modules that own trainable parameters, in registration order."""
    return [
        name
        for name, module in model.named_modules()
        if name and not list(module.children()) and any(p.requires_grad for p in module.parameters(recurse=False))
    ]


def layer_tensors(model: nn.Module, layers: list[str]) -> list[str]:
    """The trainable tensor names of ``layers``."""
    prefixes = tuple(f"{layer}." for layer in layers)
    return [n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefixes)]


def head_tensors(model: nn.Module, num_layers: int, setting: str) -> list[str]:
    """The trainable tensors of the last ``num_layers`` layers (a classifier's head).

    ``setting`` names the option in the one-line error when the model has too few layers.
    """
    layers = parameterized_layers(model)
    if num_layers >= len(layers):
        raise ConfigError(
            f"{setting}: the model has {len(layers)} layers with parameters; the head must leave at least one "
            f"for the body (got {num_layers})"
        )
    return layer_tensors(model, layers[-num_layers:])
