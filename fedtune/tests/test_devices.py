"""Devices: the setting's checks, and state that follows the parameters' device.

This machine has no GPU; the ``meta`` device stands in for "another device": a tensor
left on the CPU next to a meta tensor raises, as it would next to a CUDA tensor.
"""

from __future__ import annotations

import pytest
import torch

from fedtune.engine.devices import resolve_device
from fedtune.errors import ConfigError
from fedtune.server import new_optimizer


def test_auto_and_cpu_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(ConfigError, match='device: \'cuda:1\' but this machine has no CUDA GPU; use "cpu" or "auto"'):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])  # Flash counts its guard with .item()
def test_server_state_restored_on_the_cpu_follows_the_parameters_device(name, monkeypatch):
    import fedtune.server.fedopt as fedopt

    # the diagnostics read values back (float()), which a meta tensor cannot give
    monkeypatch.setattr(fedopt, "lr_summary", lambda lr, denominators: {})
    params = {"w": torch.tensor([1.0, -2.0])}
    opt = new_optimizer(name, lr=0.1)
    opt.step(params, {"w": torch.tensor([0.5, 0.25])})
    restored = new_optimizer(name, lr=0.1)
    restored.load_state_dict(opt.state_dict())  # CPU tensors, as a checkpoint holds them
    out = restored.step({"w": params["w"].to("meta")}, {"w": torch.tensor([0.1, 0.2]).to("meta")})
    assert out["w"].device.type == "meta"
