"""Flow: routed models (soft, hard, pure modes) and the client procedure and server.

Each test would fail on a plausible wrong implementation: a tie routed local, hard
routing by the smaller probability, a pure mode that still mixes, the LSTM unrolled with
wrong gates, one optimizer over all groups (frozen groups move), a split that changes
between rounds, a server that does not average every group.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS, ClientResult, ClientTask
from fedtune.algorithms import flow as flow_module
from fedtune.algorithms.flow import FlowParams, split_instances
from fedtune.data.base import ClientData, DatasetInfo, Examples
from fedtune.engine import run_experiment
from fedtune.errors import ConfigError
from fedtune.models import build_model
from fedtune.models.base import get_trainable, set_trainable
from fedtune.models.routed import hard_route, route, route_fractions
from fedtune.server import new_optimizer

torch.manual_seed(0)
IMAGE = DatasetInfo("toy", "classification", 3, (1, 8, 8))
FLAT = DatasetInfo("toy", "classification", 3, (6,))
TEXT = DatasetInfo("toy", "classification", 7, (5,))


def _examples(n: int, info: DatasetInfo, seed: int = 0) -> Examples:
    g = torch.Generator().manual_seed(seed)
    if info is TEXT:
        x = torch.randint(0, 7, (n, 5), generator=g)
    else:
        x = torch.randn((n, *info.input_shape), generator=g)
    return Examples({"x": x, "labels": torch.randint(0, 3, (n,), generator=g)})


def _routed(name: str, info: DatasetInfo, options: dict, layers=None):
    base = build_model(name, info, options, seed=1)
    plain = build_model(name, info, options, seed=1)
    return route(base, info, layers, policy_hidden=4, seed=1), plain


def _perturb(module: nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_hard_route_takes_the_larger_probability_and_global_on_a_tie():
    probs = torch.tensor([[0.3, 0.7], [0.8, 0.2], [0.5, 0.5]])
    assert torch.equal(hard_route(probs), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))


@pytest.mark.parametrize(
    ("name", "info", "options"),
    [("mlp", FLAT, {"hidden": [5]}), ("cnn", IMAGE, {"channels": [2, 3], "hidden": 6}), ("char_lstm", TEXT, {"hidden": 4, "num_layers": 2})],
)
def test_pure_modes_equal_the_plain_model_with_that_paths_weights(name, info, options):
    model, plain = _routed(name, info, options)
    batch = {"x": _examples(4, info).tensors["x"]}
    model.routing = "global"
    assert torch.allclose(model(batch), plain(batch), atol=1e-6)
    for block in model.blocks.values():  # local path moves away; the global path still equals the plain model
        _perturb(block.local_path)
    assert torch.allclose(model(batch), plain(batch), atol=1e-6)
    model.routing = "local"
    assert not torch.allclose(model(batch), plain(batch), atol=1e-3)
    for block in model.blocks.values():  # the plain model with the local weights: equal again
        block.global_path.load_state_dict(block.local_path.state_dict())
    model.routing = "global"
    local_as_global = model(batch)
    model.routing = "local"
    assert torch.allclose(model(batch), local_as_global, atol=1e-6)


def test_soft_mixing_weights_each_instance_by_its_gate_and_hard_routing_selects_a_path():
    model, _ = _routed("mlp", FLAT, {"hidden": [5]}, layers=["net.2"])  # only the output layer is routed
    block = model.blocks["net.2"]
    _perturb(block.local_path)
    batch = {"x": _examples(6, FLAT).tensors["x"]}
    hidden = model.base.net[1](model.base.net[0](batch["x"]))
    g, lo = block.global_path(hidden), block.local_path(hidden)
    model.routing = "soft"
    out = model(batch)
    p = torch.softmax(model.policy(batch["x"]), -1)  # one routed layer: the two logits are its gate
    assert torch.allclose(out, p[:, :1] * g + p[:, 1:] * lo, atol=1e-6)
    with torch.no_grad():  # the policy now prefers local for instances with x0 > 0
        model.policy[2].weight.zero_()
        model.policy[2].bias.zero_()
        model.policy[0].weight.zero_()
        model.policy[0].weight[0, 0] = 1.0
        model.policy[0].bias.zero_()
        model.policy[2].weight[1, 0] = 1.0
    model.eval()
    model.routing = None  # evaluation: hard
    out = model(batch)
    local = batch["x"][:, 0] > 0
    assert 0 < int(local.sum()) < 6
    assert torch.allclose(out[local], lo[local], atol=1e-6) and torch.allclose(out[~local], g[~local], atol=1e-6)
    fractions = route_fractions(model, Examples({"x": batch["x"], "labels": torch.zeros(6).long()}))
    assert fractions == {"net.2": int(local.sum()) / 6}


def test_lstm_policy_reads_the_previous_hidden_state_per_step():
    model, _ = _routed("char_lstm", TEXT, {"hidden": 4, "num_layers": 1}, layers=["lstm.0"])
    with torch.no_grad():  # gate = local exactly when the previous step's h[0] > 0: step 1 (h = 0) is a tie -> global
        for p in model.policy.parameters():
            p.zero_()
        model.policy[0].weight[0, 0] = 1.0
        model.policy[2].weight[1, 0] = 1.0
    model.eval()
    batch = {"x": _examples(3, TEXT).tensors["x"]}
    model(batch)
    gates = model.last_gates.reshape(3, 5, 1, 2)
    assert torch.all(gates[:, 0, 0] == torch.tensor([1.0, 0.0]))


def test_unknown_routed_layer_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"routed_layers: \['net.9'\].*net.0"):
        _routed("mlp", FLAT, {"hidden": [5]}, layers=["net.9"])


def test_a_model_without_a_fixed_shape_input_is_refused():
    with pytest.raises(ConfigError, match="model.name: Flow routes the small models"):
        route(nn.Linear(2, 2), DatasetInfo("text", "causal_lm", 5), None, 4, 0)


def test_the_split_is_fixed_per_client_and_disjoint():
    a_local, a_global = split_instances(10, 0.3, seed=4, client_id=2)
    assert len(a_local) == 3 and sorted(torch.cat([a_local, a_global]).tolist()) == list(range(10))
    again = split_instances(10, 0.3, seed=4, client_id=2)
    assert torch.equal(a_local, again[0])
    assert not torch.equal(a_local, split_instances(10, 0.3, seed=4, client_id=3)[0])
    assert [len(part) for part in split_instances(2, 0.01, 0, 0)] == [1, 1]


def _flow(**params):
    cls = ALGORITHMS.get("flow")
    p = FlowParams(**{"batch_size": 4, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, **params})
    algo = cls(p, new_optimizer("fedavg"))
    client = algo.client()
    model = client.prepare_model(build_model("mlp", FLAT, {"hidden": [5]}, seed=1), FLAT, seed=1)
    algo.setup(model, FLAT)
    return algo, client, model


def _data(n: int = 16) -> ClientData:
    train = _examples(n, FLAT, seed=5)
    return ClientData(train, train.subset([]), _examples(6, FLAT, seed=6))


def _moved(before, after, names):
    return {n for n in names if not torch.equal(before[n], after[n])}


def test_each_phase_moves_only_its_group_under_momentum(monkeypatch):
    algo, client, model = _flow(local_fraction=0.5, routed_layers=["net.2"])  # net.0 is shared: global group
    groups = model.groups()
    start = get_trainable(model)
    data = _data(16)  # ζ_l: 8 instances = 2 batches of 4
    result, _ = client.fit(model, start, data, ClientTask(0, 1, seed=0), None)  # the whole round
    # Phase A only (the same ζ_l, an empty ζ_g): in the pure local model the shared layer gets gradients, yet must not move
    split = flow_module.split_instances
    monkeypatch.setattr(flow_module, "split_instances", lambda *a: (split(*a)[0], torch.arange(0)))
    algo_a, client_a, model_a = _flow(local_fraction=0.5, routed_layers=["net.2"])
    after_a, _ = client_a.fit(model_a, start, data, ClientTask(0, 1, seed=0), None)
    assert after_a.metrics["steps"] == 2
    assert _moved(start, after_a.tensors, groups["local"]) == set(groups["local"])
    assert not _moved(start, after_a.tensors, groups["global"] + groups["policy"])
    # the whole round: the local path ends where Phase A left it, though the policy step's
    # soft mixing gives it gradients in Phase B (one momentum optimizer would move it)
    assert not _moved(after_a.tensors, result.tensors, groups["local"])
    assert _moved(start, result.tensors, groups["policy"]) == set(groups["policy"])
    assert _moved(start, result.tensors, groups["global"]) == set(groups["global"])
    assert result.metrics["steps"] == 2 + 2 * 2


def test_max_steps_caps_each_phase_so_phase_b_always_runs():
    _, client, model = _flow(local_fraction=0.5, max_steps=1)
    data = _data(16)  # ζ_l and ζ_g: 2 batches of 4 each
    result, _ = client.fit(model, get_trainable(model), data, ClientTask(0, 1, seed=0), None)
    assert result.metrics["steps"] == 1 + 2  # one Phase A step, one Phase B batch (policy + global step)
    assert all(torch.isfinite(torch.tensor(result.metrics[k])) for k in ("loss", "loss_local", "loss_policy"))


@pytest.mark.parametrize(
    ("regularizer", "penalty"),
    [("penalize_local", lambda p_local: p_local.mean()),
     ("prefer_local", lambda p_local: (-torch.log(p_local**2 + 1e-6)).mean())],
)
def test_policy_step_is_one_step_on_the_soft_routed_loss_plus_lambda_times_the_regularizer(monkeypatch, regularizer, penalty):
    # one Phase B batch, plain SGD: the policy must move by -policy_lr * the gradient of
    # CE(p_g·g(h) + p_l·l(h)) + λ·R(p_l), computed here from a hand-written forward
    lam, policy_lr = 0.7, 0.3
    _, client, model = _flow(local_fraction=0.5, routed_layers=["net.2"], routing_lambda=lam, policy_lr=policy_lr,
                             momentum=0.0, batch_size=8, max_steps=1, routing_regularizer=regularizer)
    start = get_trainable(model)
    data = _data(16)
    split = flow_module.split_instances
    local_idx, global_idx = split(16, 0.5, 0, 0)
    monkeypatch.setattr(flow_module, "split_instances", lambda *a: (local_idx, torch.arange(0)))
    after_a, _ = client.fit(model, start, data, ClientTask(0, 1, seed=0), None)  # Phase A alone
    monkeypatch.setattr(flow_module, "split_instances", split)
    result, _ = client.fit(model, start, data, ClientTask(0, 1, seed=0), None)  # Phase A, then one Phase B batch
    w = {n: t.clone().requires_grad_(n.startswith("policy.")) for n, t in after_a.tensors.items()}
    x, y = data.train.subset(global_idx).tensors["x"], data.train.subset(global_idx).tensors["labels"]
    probs = torch.softmax(nn.functional.linear(torch.relu(nn.functional.linear(x, w["policy.0.weight"], w["policy.0.bias"])),
                                               w["policy.2.weight"], w["policy.2.bias"]), dim=-1)
    h = torch.relu(nn.functional.linear(x, w["base.net.0.weight"], w["base.net.0.bias"]))
    out = (probs[:, :1] * nn.functional.linear(h, w["base.net.2.global_path.weight"], w["base.net.2.global_path.bias"])
           + probs[:, 1:] * nn.functional.linear(h, w["base.net.2.local_path.weight"], w["base.net.2.local_path.bias"]))
    loss = nn.functional.cross_entropy(out, y) + lam * penalty(probs[:, 1])
    names = [n for n in w if n.startswith("policy.")]
    grads = torch.autograd.grad(loss, [w[n] for n in names])
    for name, grad in zip(names, grads, strict=True):
        torch.testing.assert_close(result.tensors[name], after_a.tensors[name] - policy_lr * grad, rtol=1e-5, atol=1e-6)
    assert not torch.equal(result.tensors["policy.2.weight"], start["policy.2.weight"])


@pytest.mark.parametrize(("regularizer", "direction"), [("penalize_local", -1), ("prefer_local", 1)])
def test_the_routing_regularizer_pushes_instances_to_its_path(regularizer, direction):
    data = _data(16)
    routed = {}
    for lam in (0.0, 50.0):
        _, client, model = _flow(routing_lambda=lam, local_epochs=3, lr=0.05, momentum=0.0, routing_regularizer=regularizer)
        result, _ = client.fit(model, get_trainable(model), data, ClientTask(0, 1, seed=0), None)
        routed[lam] = result.metrics["route_local"]
    assert direction * (routed[50.0] - routed[0.0]) > 0.05


def test_the_personalized_model_routes_between_the_servers_global_path_and_the_trained_local_path():
    _, client, model = _flow(local_fraction=0.5)
    groups = model.groups()
    start = get_trainable(model)
    data = _data(16)
    fitted, _ = client.fit(model, start, data, ClientTask(0, 1, seed=0), None)
    personal, figures = client.personalize(model, start, data, ClientTask(0, 1, seed=0), None)
    now = get_trainable(personal)
    assert not _moved(start, now, groups["global"])  # a round's global-path steps are not part of it
    assert _moved(start, now, groups["local"]) == set(groups["local"])
    # Phase A is the round's; the policy steps differ only by the global path they route against
    assert not _moved(fitted.tensors, now, groups["local"])
    assert _moved(start, now, groups["policy"]) == set(groups["policy"])
    assert set(figures) == {"route_local.net.0", "route_local.net.2"}


def test_server_averages_every_group_by_examples():
    algo, client, model = _flow()
    state = get_trainable(model)
    a = {k: torch.full_like(v, 1.0) for k, v in state.items()}
    b = {k: torch.full_like(v, 4.0) for k, v in state.items()}
    new = algo.aggregate(1, state, [ClientResult(0, 2, a), ClientResult(1, 1, b)])
    groups = model.groups()
    for group in ("global", "local", "policy"):
        assert groups[group] and all(torch.allclose(new[n], torch.full_like(new[n], 2.0)) for n in groups[group])


def test_local_start_global_copies_the_global_path_and_sends_no_local_path():
    algo, client, model = _flow(local_start="global", max_steps=1)
    groups = model.groups()
    state = get_trainable(model)
    for n in groups["local"]:
        state[n] = torch.zeros_like(state[n])  # an averaged local path that must not be used
    task = algo.configure_round(1, [0], state, seed=0)[0]
    assert set(task.tensor_names) == set(groups["global"] + groups["policy"])
    assert algo.bytes_down(task, state) < sum(t.numel() * 4 for t in state.values())
    result, _ = client.fit(model, state, _data(), task, None)
    assert set(result.tensors) == set(groups["global"] + groups["policy"])
    # one Phase A step from the global path: the local path is near the global path, not near zero
    local = dict(model.named_parameters())
    for n in groups["local"]:
        g = n.replace(".local_path.", ".global_path.")
        assert (local[n] - state[g]).abs().max() < (state[g]).abs().max()
    set_trainable(model, state)


def test_flow_run_reports_personalized_figures_and_routing(make_experiment):
    exp = make_experiment(rounds=2, algorithm={"name": "flow", "local_epochs": 1, "batch_size": 16, "lr": 0.3},
                          eval={"every": 2, "personalized_clients": 3})
    run = run_experiment(exp)
    last = run.metrics[-1]
    assert (run.run_dir / "routing.png").is_file() and "routing.png" in (run.run_dir / "report.md").read_text()
    assert 0.0 <= last["personalized_harmed"] <= 1.0
    assert {"personalized_route_local.net.0", "personalized_route_local.net.2"} <= set(last)
    assert last["personalized_global_accuracy"] == pytest.approx(last["test_accuracy"], abs=0.5)


def test_flow_refuses_the_finetuning_figure(make_experiment):
    with pytest.raises(ConfigError, match="eval.finetune_epochs: algorithm 'flow' personalizes"):
        make_experiment(algorithm={"name": "flow"}, eval={"finetune_epochs": 1})


def test_lora_adapters_are_routed_per_instance(tiny_dir):
    from hf_tiny import text_batch

    info = DatasetInfo("t", "classification", 3)
    plain = build_model(f"hf:{tiny_dir['bert']}", info, {"lora_b_init_std": 0.1}, seed=0)
    model = route(build_model(f"hf:{tiny_dir['bert']}", info, {"lora_b_init_std": 0.1}, seed=0), info, None, 4, seed=0)
    assert len(model.blocks) == 5 and all(name.endswith(("query", "value")) for name in list(model.blocks)[:4])
    assert list(model.blocks)[4].endswith("classifier")  # the task head is routed as a whole layer twice
    groups = model.groups()
    local_lora = [n for n in groups["local"] if "lora_" in n]
    assert len(local_lora) == 8 and len(groups["local"]) == 10  # A and B of 4 adapters, the head's weight and bias
    assert [n for n in groups["global"] if "classifier" in n] == [n.replace(".local_path.", ".global_path.") for n in groups["local"] if "classifier" in n]
    assert sorted(model.base.head_names) == sorted(n.removeprefix("base.") for n in groups["global"] + groups["local"] if "classifier" in n)
    adapters_only = route(build_model(f"hf:{tiny_dir['bert']}", info, {"lora_b_init_std": 0.1}, seed=0), info,
                          list(model.blocks)[:4], 4, seed=0)
    assert any("classifier" in n for n in adapters_only.groups()["global"])
    batch = text_batch("classification")
    model.eval()
    plain.eval()
    model.routing = "global"
    assert torch.allclose(model(batch), plain(batch), atol=1e-5)
    with torch.no_grad():  # local adapters differ: local and global disagree; soft lies between per instance
        for n, p in model.named_parameters():
            if n in groups["local"]:
                p.add_(0.5 * torch.randn_like(p))
    model.routing = "local"
    local = model(batch)
    assert not torch.allclose(local, plain(batch), atol=1e-3)
    with torch.no_grad():  # a policy that prefers the local adapters for every instance
        model.policy[2].weight.zero_()
        model.policy[2].bias.copy_(torch.tensor([0.0, 1.0]).repeat(5))
    model.routing = None  # eval mode: hard
    assert torch.allclose(model(batch), local, atol=1e-5) and bool(model.last_gates[..., 1].all())
    # a Flow round on it: adapters and policy train, the frozen base does not move
    _, client, _ = _flow(max_steps=3)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = get_trainable(model)
    train = Examples(text_batch("classification", batch=8))
    data = ClientData(train, train.subset([]), Examples(text_batch("classification", batch=4, seed=1)))
    result, _ = client.fit(model, start, data, ClientTask(0, 1, seed=0), None)
    assert _moved(start, result.tensors, groups["local"]) and _moved(start, result.tensors, groups["policy"])
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    set_trainable(model, start)
    model.eval()
    model.copy_global_to_local()
    model.routing = "local"
    assert torch.allclose(model(batch), plain(batch), atol=1e-5)
