"""fedtune.optim.SGD: the same bits as torch.optim.SGD, without importing TorchDynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedtune.optim import SGD


def _train(make, momentum: float, weight_decay: float) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    model[2].bias.requires_grad_(False)  # a frozen tensor has no grad and must be skipped
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make(params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)]
)
def test_sgd_equals_torch_optim_sgd_bit_for_bit(momentum: float, weight_decay: float) -> None:
    ours = _train(SGD, momentum, weight_decay)
    theirs = _train(torch.optim.SGD, momentum, weight_decay)
    before = _train(lambda params, **kw: SGD(params, lr=0.0), 0.0, 0.0)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, w0) for a, w0 in zip(ours, before, strict=True))  # it trained


def test_sgd_hand_computed_step() -> None:
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = SGD([w], lr=0.5, momentum=0.9, weight_decay=0.1)
    w.grad = torch.tensor([0.2, 0.4])
    opt.step()  # g = grad + 0.1 w = [0.3, 0.2]; b = g; w -= 0.5 b
    assert torch.allclose(w.detach(), torch.tensor([0.85, -2.1]))
    w.grad = torch.tensor([0.0, 0.0])
    opt.step()  # g = 0.1 w = [0.085, -0.21]; b = 0.9 [0.3, 0.2] + g = [0.355, -0.03]
    assert torch.allclose(w.detach(), torch.tensor([0.85 - 0.1775, -2.1 + 0.015]))
    opt.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros(2))


def test_a_client_round_with_sgd_does_not_import_dynamo() -> None:
    code = (
        "import sys, torch\n"
        "from fedtune.algorithms.base import LocalParams, make_optimizer\n"
        "w = torch.zeros(3, requires_grad=True)\n"
        "opt = make_optimizer([w], LocalParams(lr=0.1, momentum=0.9))\n"
        "(w.sum() ** 2).backward(); opt.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
