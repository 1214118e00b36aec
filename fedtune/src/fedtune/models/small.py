"""Small models of the federated-learning benchmarks, registered in :data:`MODELS`.

- ``logreg``: multinomial logistic regression (the convex model of FedProx's Synthetic
  experiments, Li et al. 2020).
- ``mlp``: a fully connected net with ReLUs; the default two hidden layers of 200 units
  are the "2NN" of McMahan et al. 2017.
- ``cnn``: the LEAF FEMNIST CNN (Caldas et al. 2018, https://arxiv.org/abs/1812.01097):
  two 5x5 convolutions with 32 and 64 channels, each followed by 2x2 max-pooling, a
  dense layer of 2048 units and the output layer. "Same" padding lets it run on 28x28
  and 8x8 inputs alike.
- ``char_lstm``: the LEAF Shakespeare model: an 8-dimensional character embedding, a
  two-layer LSTM with 256 units, and a linear layer over the vocabulary that predicts
  the character following the input sequence.

Every model takes ``batch["x"]`` and returns logits of shape (B, num_classes);
``info.input_shape`` and ``info.num_classes`` fix the layer sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from fedtune.data.base import Batch, DatasetInfo
from fedtune.errors import ConfigError
from fedtune.models.registry import MODELS


def _flat_dim(info: DatasetInfo, model: str) -> int:
    if not info.input_shape:
        raise ConfigError(
            f"model.name: {model} needs a dataset with fixed-shape inputs 'x'; {info.name!r} has none"
        )
    return math.prod(info.input_shape)


class LogisticRegression(nn.Module):
    """Multinomial logistic regression on the flattened input."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch["x"].flatten(1).float())


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened input."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (200, 200)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["x"].flatten(1).float())


class CNN(nn.Module):
    """LEAF FEMNIST CNN: conv5x5(32)-pool-conv5x5(64)-pool-dense(hidden)-out."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 2048,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, batch: Batch) -> Tensor:
        return self.classifier(self.features(batch["x"].float()))


class CharLSTM(nn.Module):
    """LEAF Shakespeare next-character model: embedding, stacked LSTM, linear on the last state."""

    def __init__(
        self, vocab_size: int, embedding_dim: int = 8, hidden: int = 256, num_layers: int = 2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, batch: Batch) -> Tensor:
        states, _ = self.lstm(self.embedding(batch["x"].long()))
        return self.out(states[:, -1])


@MODELS.register("logreg")
def build_logreg(info: DatasetInfo) -> nn.Module:
    """Logistic regression; no options."""
    return LogisticRegression(_flat_dim(info, "logreg"), info.num_classes)


@MODELS.register("mlp")
def build_mlp(info: DatasetInfo, hidden: Sequence[int] = (200, 200)) -> nn.Module:
    """MLP; option ``hidden``: widths of the hidden layers (default [200, 200])."""
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ConfigError(
            f"model.options.hidden: expected a list of positive integers, got {hidden!r}"
        )
    return MLP(_flat_dim(info, "mlp"), info.num_classes, tuple(hidden))


@MODELS.register("cnn")
def build_cnn(
    info: DatasetInfo, channels: Sequence[int] = (32, 64), hidden: int = 2048
) -> nn.Module:
    """LEAF CNN; options ``channels`` (two conv widths, default [32, 64]) and ``hidden`` (dense width, 2048)."""
    shape = tuple(info.input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] < 4 or shape[2] < 4:
        raise ConfigError(
            f"model.name: cnn needs image inputs (channels, height, width) of at least 4x4; "
            f"{info.name!r} has input shape {tuple(info.input_shape)}"
        )
    if len(channels) != 2:
        raise ConfigError(f"model.options.channels: expected two conv widths, got {channels!r}")
    model = CNN(shape, info.num_classes, tuple(channels), hidden)
    if len(info.input_shape) == 2:
        return _AddChannel(model)
    return model


class _AddChannel(nn.Module):
    """Adds the channel axis to (B, H, W) inputs before the CNN."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, batch: Batch) -> Tensor:
        return self.inner({**batch, "x": batch["x"].unsqueeze(1)})


@MODELS.register("char_lstm")
def build_char_lstm(
    info: DatasetInfo, embedding_dim: int = 8, hidden: int = 256, num_layers: int = 2
) -> nn.Module:
    """LEAF Shakespeare LSTM; options ``embedding_dim`` (8), ``hidden`` (256), ``num_layers`` (2).

    ``info.num_classes`` is the vocabulary size; inputs are character ids (B, T).
    """
    if len(info.input_shape) != 1:
        raise ConfigError(
            f"model.name: char_lstm needs token-id sequences (input shape (T,)); {info.name!r} has {tuple(info.input_shape)}"
        )
    return CharLSTM(info.num_classes, embedding_dim, hidden, num_layers)


__all__ = [
    "CNN",
    "MLP",
    "CharLSTM",
    "LogisticRegression",
    "build_char_lstm",
    "build_cnn",
    "build_logreg",
    "build_mlp",
]
