"""Client procedures against their equations, on values computed by hand.

Each test fails on a plausible slip: FedProx's proximal term with the wrong sign, FedSGD
stepping up the gradient, tangents shared by tensors of the same shape, a personalized
figure averaged per client instead of per example.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedtune.algorithms import ClientTask
from fedtune.algorithms.base import LocalParams
from fedtune.algorithms.fedprox import FedProxClient, FedProxParams
from fedtune.algorithms.fedsgd import FedSGDClient
from fedtune.config import EvalConfig
from fedtune.data.base import Batch, ClientData, Examples
from fedtune.engine import evaluate as evaluation
from fedtune.grad import forward_gradient
from fedtune.models.base import get_trainable, loss_fn


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(3, 2)  # same shapes as ``a``: a shared tangent would go unnoticed per tensor

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.a(batch["x"]) + 0.5 * torch.tanh(self.b(batch["x"]))


def data(n: int = 24, seed: int = 0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    ex = Examples({"x": x, "labels": (x[:, 0] + x[:, 1] > 0).long()})
    return ClientData(train=ex, val=ex.subset([0]), test=ex.subset([1]))


def test_fedprox_adds_the_proximal_term_with_its_sign():
    torch.manual_seed(0)
    model = Linear()
    anchor = get_trainable(model)
    with torch.no_grad():
        model.a.weight.add_(0.5)  # ||w - w^t||² = 6 * 0.25 = 1.5
    batch = {k: v[:8] for k, v in data().train.tensors.items()}
    loss = FedProxClient(FedProxParams(mu=0.2)).local_loss(anchor)
    assert float(loss(model, batch)) == pytest.approx(float(loss_fn(model, batch)) + 0.5 * 0.2 * 1.5, rel=1e-6)


def test_fedprox_pulls_the_client_towards_the_global_weights():
    def drift(mu: float) -> float:
        torch.manual_seed(0)
        model = Linear()
        start = get_trainable(model)
        client = FedProxClient(FedProxParams(mu=mu, lr=0.5, local_epochs=5, batch_size=8))
        result, _ = client.fit(model, start, data(), ClientTask(0, 1, 0))
        return sum(float(((result.tensors[k] - start[k]) ** 2).sum()) for k in start)

    assert drift(1.0) < 0.5 * drift(0.0)  # lr·μ = 0.5: the pull is stable


def test_fedsgd_steps_down_the_full_data_gradient():
    torch.manual_seed(0)
    model = Linear()
    start = get_trainable(model)
    client_data = data(n=20)
    result, _ = FedSGDClient(LocalParams(lr=0.3, batch_size=7)).fit(model, start, client_data, ClientTask(0, 1, 0))
    reference = Linear()
    reference.load_state_dict(start)
    loss_fn(reference, client_data.train.tensors).backward()  # one batch of all 20 examples
    for name, p in reference.named_parameters():
        assert torch.allclose(result.tensors[name], start[name] - 0.3 * p.grad, atol=1e-6), name
    assert result.metrics["loss"] == pytest.approx(float(loss_fn(reference, client_data.train.tensors)), rel=1e-5)


def test_forward_gradient_is_unbiased_over_same_shaped_tensors():
    torch.manual_seed(0)
    model = Linear()
    params = {n: p.detach() for n, p in model.named_parameters()}
    batch = data().train.tensors

    def _loss(p):
        logits = torch.func.functional_call(model, p, (batch,))
        return nn.functional.cross_entropy(logits, batch["labels"])

    true = torch.autograd.grad(_loss({n: v.requires_grad_(True) for n, v in params.items()}), list(params.values()))
    true = {n: g.detach() for n, g in zip(params, true, strict=True)}
    params = {n: v.detach() for n, v in params.items()}
    n = 3000
    mean = {k: torch.zeros_like(v) for k, v in params.items()}
    for step in range(n):
        est = forward_gradient(_loss, params, seed=1, keys=(1, 0, step))
        for k in mean:
            mean[k] += est.grads[k] / n
    scale = torch.sqrt(sum((g**2).sum() for g in true.values()))
    for k in ("a.weight", "b.weight"):
        # the standard error of each coordinate's mean is about ‖∇L‖/√n ≈ 0.02‖∇L‖
        assert float((mean[k] - true[k]).abs().max()) < 0.1 * float(scale), k


def test_personalized_figure_is_the_example_weighted_mean_and_restores_the_global_model():
    model = nn.Module()
    model.linear = nn.Linear(2, 2)
    model.forward = lambda batch: model.linear(batch["x"])
    with torch.no_grad():  # always predicts class 0
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.tensor([1.0, 0.0]))
    state = get_trainable(model)
    x = torch.zeros(4, 2)
    clients = [
        ClientData(Examples({"x": x, "labels": torch.zeros(4).long()}), Examples({"x": x[:0], "labels": torch.zeros(0).long()}),
                   Examples({"x": x[:3], "labels": torch.zeros(3).long()})),  # 3 test examples, all right
        ClientData(Examples({"x": x, "labels": torch.zeros(4).long()}), Examples({"x": x[:0], "labels": torch.zeros(0).long()}),
                   Examples({"x": x[:1], "labels": torch.ones(1).long()})),  # 1 test example, wrong
    ]
    cfg = EvalConfig(finetune_epochs=1, finetune_lr=1e-3, personalized_clients=2)
    out = evaluation.personalized(model, state, 2, lambda cid: clients[cid], cfg, batch_size=4, seed=0, round=1)
    assert out["personalized_accuracy"] == 0.75  # (3·1 + 1·0) / 4, not (1 + 0) / 2
    assert out["personalized_global_accuracy"] == 0.75 and out["personalized_harmed"] == 0.0  # lr 1e-3: no flip
    assert all(torch.equal(p, state[n]) for n, p in get_trainable(model).items())
