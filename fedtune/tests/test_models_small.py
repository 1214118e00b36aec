"""Small models: output shapes for each dataset shape, options, clear errors."""

from __future__ import annotations

import pytest
import torch

from fedtune.config import ConfigError
from fedtune.data.base import DatasetInfo
from fedtune.models import MODELS, build_model
from fedtune.models.base import get_trainable, loss_fn

MNIST = DatasetInfo(name="mnist", task="classification", num_classes=10, input_shape=(1, 28, 28))
DIGITS = DatasetInfo(name="digits", task="classification", num_classes=10, input_shape=(1, 8, 8))
SYNTH = DatasetInfo(name="synthetic", task="classification", num_classes=10, input_shape=(60,))
SHAKE = DatasetInfo(name="shakespeare", task="classification", num_classes=70, input_shape=(80,))


def _batch(info: DatasetInfo, b: int = 4) -> dict[str, torch.Tensor]:
    if info.name == "shakespeare":
        x = torch.randint(0, info.num_classes, (b, *info.input_shape))
    else:
        x = torch.randn(b, *info.input_shape)
    return {"x": x, "labels": torch.randint(0, info.num_classes, (b,))}


@pytest.mark.parametrize(
    ("name", "info"),
    [
        ("logreg", MNIST),
        ("logreg", SYNTH),
        ("mlp", MNIST),
        ("mlp", SYNTH),
        ("cnn", MNIST),
        ("cnn", DIGITS),
        ("char_lstm", SHAKE),
    ],
)
def test_logits_shape_and_backward(name, info):
    model = build_model(name, info, seed=0)
    batch = _batch(info)
    logits = model(batch)
    assert logits.shape == (4, info.num_classes)
    loss = loss_fn(model, batch)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registry_names():
    assert {"logreg", "mlp", "cnn", "char_lstm"} <= set(MODELS.names())


def test_seeded_init_is_reproducible():
    a = get_trainable(build_model("cnn", DIGITS, seed=3))
    b = get_trainable(build_model("cnn", DIGITS, seed=3))
    c = get_trainable(build_model("cnn", DIGITS, seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_architecture_sizes():
    cnn = build_model("cnn", MNIST)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size) for m in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert cnn.classifier[1].in_features == 64 * 7 * 7 and cnn.classifier[1].out_features == 2048
    assert build_model("cnn", MNIST, {"hidden": 128}).classifier[1].out_features == 128
    mlp = build_model("mlp", SYNTH, {"hidden": [32, 16, 8]})
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [
        32,
        16,
        8,
        10,
    ]
    lstm = build_model("char_lstm", SHAKE)
    assert (
        lstm.embedding.embedding_dim == 8
        and lstm.lstm.hidden_size == 256
        and lstm.lstm.num_layers == 2
    )


def test_char_lstm_predicts_from_the_last_position():
    model = build_model("char_lstm", SHAKE, {"hidden": 16})
    x = torch.randint(0, 70, (2, 80))
    full = model({"x": x})
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 70
    assert not torch.allclose(full, model({"x": changed}))


def test_shape_errors():
    with pytest.raises(ConfigError, match=r"^model.name: cnn needs image inputs"):
        build_model("cnn", SYNTH)
    with pytest.raises(ConfigError, match=r"^model.name: char_lstm needs token-id sequences"):
        build_model("char_lstm", MNIST)
    with pytest.raises(ConfigError, match=r"^model.options.hidden"):
        build_model("mlp", MNIST, {"hidden": [0]})
