"""The personalized baselines (Ditto, APFL, FedRep, LG-FedAvg, local) and the evaluation
protocol they share with Flow.

Update rules are checked against values computed by hand or by autograd; the stateful
methods are checked to resume from a checkpoint exactly; the evaluation is checked to
compare each client's own model with the global model on the same test split.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS, ClientResult, ClientTask
from fedtune.config import EvalConfig
from fedtune.data.base import ClientData, DatasetInfo, Examples
from fedtune.engine import evaluate as evaluation
from fedtune.engine import run_experiment
from fedtune.errors import ConfigError, RunError
from fedtune.models import build_model
from fedtune.models.base import get_trainable, loss_fn, set_trainable
from fedtune.server import new_optimizer

INFO = DatasetInfo("toy", "classification", 3, (4,))


def _client(name: str, **params):
    cls = ALGORITHMS.get(name)
    p = cls.Params(**{"batch_size": 8, "lr": 0.1, **params})
    algo = cls(p, new_optimizer("fedavg"))
    model = build_model("mlp", INFO, {"hidden": [5]}, seed=2)
    algo.setup(model, INFO)
    return algo, algo.client(), model


def _data(n: int = 8, seed: int = 0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    ex = Examples({"x": torch.randn(n, 4, generator=g), "labels": torch.randint(0, 3, (n,), generator=g)})
    return ClientData(ex, ex.subset([]), ex)


def _grad(model: nn.Module, state, batch) -> dict:
    set_trainable(model, state)
    model.zero_grad()
    loss_fn(model, batch).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_ditto_personal_step_is_the_proximal_gradient_step_from_its_state():
    algo, client, model = _client("ditto", ditto_lambda=0.7, max_steps=1)
    w = get_trainable(model)
    v = {k: t + 0.3 * torch.randn_like(t) for k, t in w.items()}
    data = _data(8)  # one batch of all 8: the shuffle does not matter
    grad = _grad(model, v, data.train.tensors)
    expected = {k: v[k] - 0.1 * (grad[k] + 0.7 * (v[k] - w[k])) for k in w}
    result, personal = client.fit(model, w, data, ClientTask(0, 1, seed=0), v)
    assert all(torch.allclose(personal[k], expected[k], atol=1e-6) for k in w)
    grad_w = _grad(model, w, data.train.tensors)  # the global model: one plain step from w^t, sent
    assert all(torch.allclose(result.tensors[k], w[k] - 0.1 * grad_w[k], atol=1e-6) for k in w)


def test_apfl_step_matches_autograd_of_the_mixture_including_alpha():
    algo, client, model = _client("apfl", alpha=0.3, alpha_lr=0.5, max_steps=1)
    w = get_trainable(model)
    v = {k: t + 0.3 * torch.randn_like(t) for k, t in w.items()}
    data = _data(8)
    leaves = {k: t.clone().requires_grad_(True) for k, t in v.items()}
    a = torch.tensor(0.3, requires_grad=True)
    logits = torch.func.functional_call(model, {k: a * leaves[k] + (1 - a) * w[k] for k in w}, (data.train.tensors,))
    torch.nn.functional.cross_entropy(logits, data.train.tensors["labels"]).backward()
    grad_w = _grad(model, w, data.train.tensors)
    result, state = client.fit(model, w, data, ClientTask(0, 1, seed=0), {**v, "alpha": 0.3})
    assert all(torch.allclose(state[k], v[k] - 0.1 * leaves[k].grad, atol=1e-6) for k in w)
    assert state["alpha"] == pytest.approx(min(max(0.3 - 0.5 * float(a.grad), 0.0), 1.0), abs=1e-6)
    assert all(torch.allclose(result.tensors[k], w[k] - 0.1 * grad_w[k], atol=1e-6) for k in w)
    personal = client.personal_model(model, w, state)
    mixed = {k: state["alpha"] * state[k] + (1 - state["alpha"]) * w[k] for k in w}
    assert all(torch.equal(p, mixed[n]) for n, p in personal.named_parameters())


def test_apfl_refuses_settings_its_rule_would_ignore():
    with pytest.raises(ValueError, match="apfl runs plain SGD"):
        ALGORITHMS.get("apfl").Params(momentum=0.9)


def test_fedrep_trains_its_head_then_the_body_and_sends_only_the_body():
    algo, client, model = _client("fedrep", max_steps=1)  # the head's one step only
    w = get_trainable(model)
    head = {"net.2.weight", "net.2.bias"}
    task = algo.configure_round(1, [0], w, seed=0)[0]
    assert set(task.tensor_names) == set(w) - head
    result, state = client.fit(model, w, _data(), task, None)
    assert set(state) == head and set(result.tensors) == set(w) - head
    assert all(torch.equal(result.tensors[k], w[k]) for k in result.tensors)  # body frozen in the head phase
    assert all(not torch.equal(state[k], w[k]) for k in head)
    _, client2, model2 = _client("fedrep", head_epochs=1, local_epochs=1)
    result2, state2 = client2.fit(model2, w, _data(), task, state)
    assert all(not torch.equal(result2.tensors[k], w[k]) for k in result2.tensors)
    personal = dict(client2.personal_model(model2, w, state2).named_parameters())
    assert all(torch.equal(personal[k], w[k]) for k in set(w) - head) and all(torch.equal(personal[k], state2[k]) for k in head)


def test_lg_fedavg_keeps_the_body_and_shares_the_head():
    algo, client, model = _client("lg_fedavg")
    w = get_trainable(model)
    own_body = {k: t + 1.0 for k, t in w.items() if not k.startswith("net.2.")}
    result, state = client.fit(model, w, _data(), algo.configure_round(1, [0], w, 0)[0], own_body)
    assert set(result.tensors) == {"net.2.weight", "net.2.bias"} and set(state) == set(own_body)
    # training started from the client's body, not the global one: the body stays near w + 1
    assert all((state[k] - own_body[k]).abs().max() < 0.5 for k in state)
    new = algo.aggregate(1, w, [ClientResult(0, 1, result.tensors)])
    assert all(torch.equal(new[k], w[k]) for k in own_body) and torch.equal(new["net.2.bias"], result.tensors["net.2.bias"])


def test_head_larger_than_the_model_is_refused():
    with pytest.raises(ConfigError, match="algorithm.head_layers: the model has 2 layers"):
        _client("fedrep", head_layers=2)


def test_personalized_evaluation_counts_harmed_clients_and_weights_figures_by_examples():
    model = nn.Linear(2, 2)
    model_forward = model.forward
    model.forward = lambda batch: model_forward(batch["x"])  # type: ignore[method-assign]
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0]))  # the global model predicts class 0
    state = get_trainable(model)
    x = torch.zeros(4, 2)
    right = ClientData(Examples({"x": x, "labels": torch.zeros(4).long()}), Examples({"x": x[:0], "labels": torch.zeros(0).long()}),
                       Examples({"x": x[:3], "labels": torch.zeros(3).long()}))
    clients = [right, right]

    def personalize(cid, data):  # client 0's own model predicts class 1: worse than the global model
        with torch.no_grad():
            model.bias.copy_(torch.tensor([0.0, 1.0] if cid == 0 else [1.0, 0.0]))
        return model, {"route_local.a": float(cid)}

    cfg = EvalConfig(personalized_clients=2)
    out = evaluation.personalized(model, state, 2, lambda cid: clients[cid], cfg, 4, 0, 1, personalize)
    assert out == {"personalized_accuracy": 0.5, "personalized_global_accuracy": 1.0, "personalized_harmed": 0.5,
                   "personalized_route_local.a": 0.5}
    assert torch.equal(model.bias, state["bias"])  # the global model is back


def test_a_personalized_model_that_diverges_stops_the_run_naming_the_round_and_client():
    model = nn.Linear(4, 3)
    model_forward = model.forward
    model.forward = lambda batch: model_forward(batch["x"])  # type: ignore[method-assign]

    def personalize(cid, data):
        raise FloatingPointError("non-finite training loss (nan) at local step 1")

    with pytest.raises(RunError, match=r"^round 7: client \d+'s personalized model for evaluation: non-finite training loss \(nan\)"):
        evaluation.personalized(model, get_trainable(model), 2, lambda cid: _data(), EvalConfig(personalized_clients=2), 4, 0, 7, personalize)


def _exp(make_experiment, name: str, **extra):
    algo = {"name": name, "local_epochs": 1, "batch_size": 16, "lr": 0.3, **extra}
    return make_experiment(algorithm=algo, rounds=4, eval={"every": 2, "personalized_clients": 3}, checkpoint={"every": 2})


class _Stop(Exception):
    pass


def _stop_at_3(rnd, record):
    if rnd == 3:
        raise _Stop


@pytest.mark.parametrize(
    ("name", "store"), [("ditto", "disk"), ("apfl", "memory"), ("fedrep", "memory"), ("lg_fedavg", "disk"), ("local", "memory"), ("flow", "memory")]
)
def test_personalized_methods_resume_equal_to_an_uninterrupted_run(make_experiment, tmp_path, name, store):
    def clean(metrics):
        return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in metrics]

    straight = run_experiment(_exp(make_experiment, name).model_copy(update={"output": str(tmp_path / "a"), "client_state": store}), report=False)
    exp = _exp(make_experiment, name).model_copy(update={"output": str(tmp_path / "b"), "client_state": store})
    with pytest.raises(_Stop):
        run_experiment(exp, progress=_stop_at_3, report=False)
    resumed = run_experiment(exp, resume=True, report=False)
    assert clean(resumed.metrics) == clean(straight.metrics)
    assert "personalized_harmed" in straight.metrics[-1]


def test_local_training_shares_nothing_and_keeps_the_initial_global_model(make_experiment):
    run = run_experiment(_exp(make_experiment, "local"), report=False)
    assert all(m["bytes_up"] == 0 and m["bytes_down"] == 0 for m in run.metrics)
    first, last = run.metrics[1], run.metrics[-1]
    assert first["test_accuracy"] == last["test_accuracy"]  # the untrained initial model throughout
    assert last["personalized_accuracy"] > last["personalized_global_accuracy"]
