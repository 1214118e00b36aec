"""Spry's head variants: the exact head gradient, dropout during the jvp, the warm head."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import text_batch

from fedtune.algorithms.base import ClientTask
from fedtune.algorithms.spry import EstimatedGradientClient, SpryParams, split_trainables
from fedtune.data.base import ClientData, DatasetInfo, Examples
from fedtune.errors import ConfigError
from fedtune.grad import backprop_gradient, exact_head_gradient, forward_gradient, model_loss
from fedtune.models.base import get_trainable
from fedtune.models.hf import build_hf_model

INFO = DatasetInfo(name="t", task="classification", num_classes=3)


def _bert(tiny_dir, **options):
    torch.manual_seed(1)
    return build_hf_model(str(tiny_dir["bert"]), INFO, lora_b_init_std=0.1, **options)


def _trainables(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_exact_head_gradient_equals_backprop_and_body_equals_forward_gradient(tiny_dir):
    model = _bert(tiny_dir)
    params = _trainables(model)
    head = model.head_names
    assert head and set(head) < set(params)
    loss_fn = model_loss(model, text_batch("classification", batch=4), dropout=False)
    loss_b, true = backprop_gradient(loss_fn, params)
    est = exact_head_gradient(loss_fn, params, head, seed=5, keys=(1, 2, 3), num_tangents=2)
    for n in head:  # the head's gradient is exact, not estimated
        torch.testing.assert_close(est.grads[n], true[n], rtol=1e-5, atol=1e-7)
    body = {n: p for n, p in params.items() if n not in head}
    fwd = forward_gradient(loss_fn, body, seed=5, keys=(1, 2, 3), num_tangents=2)
    for n in body:  # the adapters' estimate is the forward gradient over the adapters alone
        torch.testing.assert_close(est.grads[n], fwd.grads[n], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(est.jvps, fwd.jvps, rtol=1e-5, atol=1e-8)
    assert abs(float(est.loss) - float(loss_b)) < 1e-6
    assert all(p.grad is None for p in model.parameters())  # nothing left on the model


def test_exact_head_gradient_of_the_head_alone_is_backprop(tiny_dir):
    model = _bert(tiny_dir)
    params = {n: p.detach().clone() for n, p in model.named_parameters() if n in model.head_names}
    loss_fn = model_loss(model, text_batch("classification", batch=4), dropout=False)
    _, true = backprop_gradient(loss_fn, params)
    est = exact_head_gradient(loss_fn, params, list(params), seed=0, keys=(0,))
    for n in params:
        torch.testing.assert_close(est.grads[n], true[n], rtol=1e-5, atol=1e-7)


def test_exact_head_gradient_refuses_unknown_names(tiny_dir):
    model = _bert(tiny_dir)
    loss_fn = model_loss(model, text_batch("classification"), dropout=False)
    with pytest.raises(ValueError, match="not among the params"):
        exact_head_gradient(loss_fn, _trainables(model), ["nope"], seed=0, keys=(0,))


def _client_data() -> ClientData:
    batch = text_batch("classification", batch=12, seed=4)
    return ClientData(Examples(batch), Examples({}), Examples({}))


def _fit(model, **params):
    client = EstimatedGradientClient(SpryParams(**{"batch_size": 4, "lr": 1e-2, **params}))
    state = get_trainable(model)
    result, _ = client.fit(model, state, _client_data(), ClientTask(client_id=1, round=2, seed=7))
    return state, result.tensors


def test_client_with_exact_head_steps_the_head_along_its_exact_gradient(tiny_dir):
    model = _bert(tiny_dir)
    head = split_trainables(model)[1]
    before, after = _fit(model, head_gradient="exact", optimizer="sgd", max_steps=1, batch_size=12)
    # one SGD step of lr 1e-2 on the exact gradient of the one batch (all 12 examples; dropout off)
    loss_fn = model_loss(model, text_batch("classification", batch=12, seed=4), dropout=False)
    _, true = backprop_gradient(loss_fn, before)
    for n in head:
        torch.testing.assert_close(after[n], before[n] - 1e-2 * true[n], rtol=1e-4, atol=1e-6)


def test_jvp_dropout_is_seeded_and_changes_the_update(tiny_dir):
    model = _bert(tiny_dir, lora_dropout=0.5)
    _, with_dropout = _fit(model, jvp_dropout=True)
    _, again = _fit(model, jvp_dropout=True)
    _, without = _fit(model)
    for n in with_dropout:
        torch.testing.assert_close(with_dropout[n], again[n], rtol=0, atol=0)  # same seed, same masks
    assert any(not torch.equal(with_dropout[n], without[n]) for n in with_dropout)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"head_gradient": "exact", "communication": "per_iteration"}, "per_epoch"),
        ({"head_gradient": "exact", "estimator": "spsa"}, "forward estimator"),
        ({"jvp_dropout": True, "estimator": "mezo"}, "same dropout masks"),
    ],
)
def test_inconsistent_head_settings_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        SpryParams(**params)


def test_warm_head_loads_from_a_checkpoint_and_probe_trains_only_the_head(tiny_dir, tmp_path):
    probe = _bert(tiny_dir, train_adapters=False)
    assert set(_trainables(probe)) == set(probe.head_names)
    warm = {n: torch.full_like(p, 0.25) for n, p in _trainables(probe).items()}
    path = tmp_path / "round_00003.pt"
    torch.save({"round": 3, "global_state": warm, "server": {}}, path)
    model = _bert(tiny_dir, head_init=str(path))
    params = dict(model.named_parameters())
    for n in model.head_names:
        assert torch.equal(params[n].detach(), warm[n])
    assert len(_trainables(model)) > len(warm)  # the adapters still train

    torch.save({"something.else": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="model.options.head_init: .* holds no tensor"):
        _bert(tiny_dir, head_init=str(tmp_path / "other.pt"))
    wrong = {n: torch.zeros(*p.shape, 2) for n, p in warm.items()}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="has shape"):
        _bert(tiny_dir, head_init=str(tmp_path / "wrong.pt"))
    with pytest.raises(ConfigError, match="cannot read"):
        _bert(tiny_dir, head_init=str(tmp_path / "missing.pt"))


def test_paper_example_holds_the_authors_configuration():
    from pathlib import Path

    from fedtune.config import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[1] / "examples" / "spry_mr_paper.toml")
    algo = SpryParams(**{k: v for k, v in exp.algorithm.model_dump().items() if k != "name"})
    assert algo.share_head is False and algo.jvp_dropout is True and algo.weight_decay == 0.01
    assert (algo.optimizer, algo.lr, algo.num_tangents) == ("adamw", 1e-4, 1)
    assert algo.max_steps is None and algo.local_epochs == 1  # one full local epoch
    assert exp.model.options == {"peft": "lora", "r": 1, "lora_alpha": 1, "lora_dropout": 0.1}
    assert exp.data.name == "mr" and exp.server.name == "fedyogi"


def _leaves(fn) -> set[int]:
    """ids of the tensors an autograd graph accumulates into."""
    seen, stack, out = set(), [fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            out.add(id(node.variable))
        stack.extend(nxt for nxt, _ in node.next_functions)
    return out


def test_a_share_records_no_graph_for_the_tensors_it_does_not_train(tiny_dir):
    model = _bert(tiny_dir)
    head = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in model.head_names}
    loss_fn = model_loss(model, text_batch("classification"), dropout=False)
    with torch.enable_grad():
        loss = loss_fn(head)
    # only the head's leaves: the adapters outside the share (trainable parameters) are not in the graph
    assert _leaves(loss.grad_fn) == {id(t) for t in head.values()}


def test_linear_probe_on_cached_features_equals_training_the_head_through_the_frozen_model(tiny_dir):
    from fedtune.data.base import FederatedDataset
    from fedtune.models.probe import federated_linear_probe, head_features

    model = _bert(tiny_dir)
    batch = text_batch("classification", batch=6, seed=2)
    data = ClientData(Examples(batch), Examples({}), Examples(text_batch("classification", batch=4, seed=3)))
    fed = FederatedDataset(info=INFO, clients=[data])
    module = model.get_submodule(model.head_names[0].rsplit(".", 1)[0])
    feats = head_features(model, module, data.train)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(feats), model(batch))  # the features are the head's inputs
    head = {n: p.detach().clone() for n, p in model.named_parameters() if n in model.head_names}
    result = federated_linear_probe(model, fed, rounds=1, clients_per_round=1, lr=0.1, seed=0, batch_size=6)
    # the same step through the whole frozen model (evaluation mode, one batch of all 6 examples)
    _, grads = backprop_gradient(model_loss(model, batch, dropout=False), head)
    leaves = {n: t.clone().requires_grad_(True) for n, t in head.items()}
    optimizer = torch.optim.AdamW(list(leaves.values()), lr=0.1, weight_decay=0.0)
    for n, t in leaves.items():
        t.grad = grads[n]
    optimizer.step()
    for n in head:
        torch.testing.assert_close(result.head[n], leaves[n].detach(), rtol=1e-4, atol=1e-6)
    assert len(result.test_accuracy) == 1 and 0.0 <= result.test_accuracy[0] <= 1.0


def test_head_to_head_full_mode_runs_mr_from_the_warm_head(monkeypatch):
    import importlib.util
    from pathlib import Path

    from fedtune.config import load_experiment

    folder = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location("spry_vs_zeroth", folder / "spry_vs_zeroth.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import spry_convergence

    monkeypatch.setattr(spry_convergence, "warm_head", lambda task, alpha, seed, *a, **k: (f"/heads/{task}-{alpha}-{seed}.pt", {}))
    for method in bench.FULL_METHODS:
        exp = load_experiment(raw=bench.experiment(method, 2, 60, "/tmp/unused", None, "full"))
        assert exp.data.name == "mr" and exp.data.alpha == 1.0
        assert exp.model.options["head_init"] == "/heads/mr-1.0-2.pt" and exp.model.options["r"] == 1
    assert bench.experiment("spry_exact", 0, 60, "-", 3e-4, "full")["algorithm"]["head_gradient"] == "exact"
