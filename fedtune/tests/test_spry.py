"""Spry and FedFGD: the weight split, the forward-gradient client, per-iteration replay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS
from fedtune.algorithms.spry import Spry, SpryParams, assign_groups
from fedtune.data.base import Batch, ClientData, Examples
from fedtune.models.base import get_trainable
from fedtune.server import new_optimizer


class TinyNet(nn.Module):
    """Three linear layers; ``head`` plays the task head (named like an HF classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 8)
        self.l2 = nn.Linear(8, 8)
        self.l3 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, batch: Batch) -> torch.Tensor:
        h = torch.tanh(self.l3(torch.tanh(self.l2(torch.tanh(self.l1(batch["x"]))))))
        return self.head(h)


def make_data(n: int = 40, seed: int = 0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    ex = Examples({"x": x, "labels": y})
    return ClientData(train=ex, val=ex.subset([0, 1]), test=ex.subset([2, 3]))


def fit(algo, model, state, data, task):
    """Run the algorithm's client procedure as a backend would; the result only."""
    result, client_state = algo.client().fit(model, state, data, task)
    assert client_state is None  # Spry's clients keep nothing between rounds
    return result


def make_spry(**overrides) -> tuple[Spry, TinyNet]:
    torch.manual_seed(0)
    model = TinyNet()
    algo = Spry(SpryParams(**{"batch_size": 8, "lr": 1e-2, **overrides}), new_optimizer("fedavg"))
    algo.setup(model, None)
    return algo, model


def test_assign_groups_round_robin():
    assert assign_groups(5, 2) == [[0, 2, 4], [1, 3]]
    assert assign_groups(3, 3) == [[0], [1], [2]]
    assert assign_groups(2, 5) == [[0], [1], [0], [1], [0]]
    with pytest.raises(ValueError, match="at least one"):
        assign_groups(0, 3)


@pytest.mark.parametrize("share_head", [True, False])
@pytest.mark.parametrize("clients", [1, 2, 3, 4, 7])
def test_every_trainable_tensor_is_trained_each_round(share_head, clients):
    algo, model = make_spry(share_head=share_head)
    state = get_trainable(model)
    tasks = algo.configure_round(1, list(range(10, 10 + clients)), state, seed=0)
    trained = [n for t in tasks.values() for n in t.tensor_names]
    assert set(trained) == set(state)
    if share_head and clients > 1:
        assert all("head.weight" in t.tensor_names for t in tasks.values())
    if clients <= len(algo.groups):  # no group is trained twice
        body = [n for n in trained if not (share_head and n.startswith("head."))]
        assert len(body) == len(set(body))


def test_client_sends_only_its_tensors_and_counts_bytes():
    algo, model = make_spry()
    state = get_trainable(model)
    tasks = algo.configure_round(1, [0, 1, 2], state, seed=3)
    res = fit(algo, model, state, make_data(), tasks[1])
    assert set(res.tensors) == set(tasks[1].tensor_names)
    assert res.bytes_up == sum(t.numel() * 4 for t in res.tensors.values())
    assert res.metrics["steps"] == 5
    assert any(not torch.equal(res.tensors[n], state[n]) for n in res.tensors)
    assert algo.bytes_down(tasks[1], state) == sum(t.numel() * 4 for t in state.values())


def test_per_iteration_replay_equals_client_computation():
    algo_e, model = make_spry(communication="per_epoch", num_tangents=3, local_epochs=2)
    algo_i, _ = make_spry(communication="per_iteration", num_tangents=3, local_epochs=2)
    state = get_trainable(model)
    data = make_data()
    tasks = algo_e.configure_round(2, [4, 9], state, seed=11)
    algo_i.configure_round(2, [4, 9], state, seed=11)
    sent = fit(algo_e, model, state, data, tasks[9])
    scalars = fit(algo_i, model, state, data, tasks[9])
    assert scalars.tensors == {}
    assert len(scalars.jvps) == 10 and all(len(d) == 3 for d in scalars.jvps)
    assert scalars.bytes_up == 10 * 3 * 4 < sent.bytes_up
    rebuilt = algo_i.rebuild(state, scalars)
    assert set(rebuilt.tensors) == set(sent.tensors)
    for name, t in sent.tensors.items():
        torch.testing.assert_close(rebuilt.tensors[name], t, rtol=0, atol=1e-7)
    # and the aggregated global model is the same in both modes
    other = fit(algo_e, model, state, data, tasks[4])
    new_e = algo_e.aggregate(2, state, [sent, other])
    new_i = algo_i.aggregate(2, state, [scalars, fit(algo_i, model, state, data, tasks[4])])
    for name in state:
        torch.testing.assert_close(new_i[name], new_e[name], rtol=0, atol=1e-7)


def test_tangents_differ_per_client_and_step():
    algo, model = make_spry(communication="per_iteration")
    state = get_trainable(model)
    tasks = algo.configure_round(1, [0, 1, 2, 3, 4], state, seed=0)  # 5 clients > 3 groups: 0 and 3 share l1
    data = make_data()
    a = fit(algo, model, state, data, tasks[0]).jvps
    b = fit(algo, model, state, data, tasks[3]).jvps
    assert tasks[0].tensor_names == tasks[3].tensor_names
    assert a != b
    assert len({round(d[0], 6) for d in a}) == len(a)


def test_aggregate_is_per_tensor_weighted_mean_over_trainers():
    algo, model = make_spry()
    state = get_trainable(model)
    tasks = algo.configure_round(1, [0, 1, 2, 3, 4], state, seed=0)
    results = [fit(algo, model, state, make_data(20 + 10 * j, seed=j), tasks[j]) for j in range(5)]
    new = algo.aggregate(1, state, results)
    sharers = [r for r in results if "l1.weight" in r.tensors]
    assert len(sharers) == 2
    w = torch.tensor([float(r.num_examples) for r in sharers])
    expected = sum(wi * r.tensors["l1.weight"] for wi, r in zip(w, sharers, strict=True)) / w.sum()
    torch.testing.assert_close(new["l1.weight"], expected)
    only = [r for r in results if "l3.weight" in r.tensors]
    assert len(only) == 1
    torch.testing.assert_close(new["l3.weight"], only[0].tensors["l3.weight"])


def test_spry_learns_on_a_tiny_problem():
    algo, model = make_spry(lr=5e-2, local_epochs=3, num_tangents=2)
    state = get_trainable(model)
    data = make_data(80)
    before = nn.functional.cross_entropy(model(data.train.tensors), data.train.labels)
    for rnd in range(1, 6):
        tasks = algo.configure_round(rnd, [0, 1], state, seed=1)
        state = algo.aggregate(rnd, state, [fit(algo, model, state, data, t) for t in tasks.values()])
    model.load_state_dict(state, strict=False)
    after = nn.functional.cross_entropy(model(data.train.tensors), data.train.labels)
    assert after < before


def test_fedfgd_trains_every_tensor_on_every_client():
    torch.manual_seed(0)
    model = TinyNet()
    cls = ALGORITHMS.get("fedfgd")
    algo = cls(cls.Params(batch_size=8), new_optimizer("fedavg"))
    algo.setup(model, None)
    state = get_trainable(model)
    tasks = algo.configure_round(1, [0, 1, 2], state, seed=0)
    assert all(set(t.tensor_names) == set(state) for t in tasks.values())
    res = fit(algo, model, state, make_data(), tasks[0])
    assert set(res.tensors) == set(state)


def test_params_are_validated_with_one_line_errors():
    with pytest.raises(ValueError, match="communication"):
        SpryParams(communication="sometimes")
    assert SpryParams().optimizer == "adamw" and SpryParams().lr == 1e-4 and SpryParams().num_tangents == 1


# -- Hugging Face models with LoRA ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from hf_tiny import save_tiny

    from fedtune.data.base import DatasetInfo
    from fedtune.models.hf import build_hf_model

    path = save_tiny("bert", tmp_path_factory.mktemp("hf"))
    torch.manual_seed(0)
    return build_hf_model(str(path), DatasetInfo("t", "classification", 3), peft="lora", r=2, lora_b_init_std=0.01)


def hf_data(task: str, seed: int = 0) -> ClientData:
    from hf_tiny import text_batch

    ex = Examples(text_batch(task, batch=12, seq=8, seed=seed))
    return ClientData(train=ex, val=ex.subset([0]), test=ex.subset([1]))


def test_lora_groups_split_over_clients(tiny_bert):
    algo = Spry(SpryParams(batch_size=4), new_optimizer("fedyogi"))
    algo.setup(tiny_bert, None)
    state = get_trainable(tiny_bert)
    assert len(algo.groups) == 4  # 2 layers x (query, value)
    assert all(len(g) == 2 and {n.split(".lora_")[1][0] for n in g} == {"A", "B"} for g in algo.groups)
    assert algo.head and all("classifier" in n for n in algo.head)
    tasks = algo.configure_round(1, [5, 6, 7], state, seed=0)
    assert set().union(*(t.tensor_names for t in tasks.values())) == set(state)
    assert [len(t.tensor_names) for t in tasks.values()] == [4 + 2, 2 + 2, 2 + 2]


def test_hf_per_iteration_replay_matches_and_server_step_applies(tiny_bert):
    state = get_trainable(tiny_bert)
    modes = {}
    for mode in ("per_epoch", "per_iteration"):
        algo = Spry(SpryParams(batch_size=4, lr=1e-2, num_tangents=2, communication=mode), new_optimizer("fedyogi"))
        algo.setup(tiny_bert, None)
        tasks = algo.configure_round(1, [0, 1], state, seed=5)
        results = [fit(algo, tiny_bert, state, hf_data("classification", j), tasks[j]) for j in (0, 1)]
        modes[mode] = algo.aggregate(1, state, results)
    changed = [n for n in state if not torch.equal(modes["per_epoch"][n], state[n])]
    assert set(changed) == set(state)
    for n in state:
        torch.testing.assert_close(modes["per_iteration"][n], modes["per_epoch"][n], rtol=0, atol=1e-7)


def test_causal_lm_with_chunked_loss(tmp_path):
    from hf_tiny import VOCAB, save_tiny

    from fedtune.data.base import DatasetInfo
    from fedtune.models.hf import build_hf_model

    model = build_hf_model(str(save_tiny("llama", tmp_path)), DatasetInfo("t", "causal_lm", VOCAB), peft="lora", r=2)
    algo = Spry(SpryParams(batch_size=4, loss_chunk_size=3), new_optimizer("fedyogi"))
    algo.setup(model, None)
    assert algo.head == [] and len(algo.groups) == 4
    state = get_trainable(model)
    tasks = algo.configure_round(1, [0, 1, 2, 3, 4], state, seed=0)
    res = fit(algo, model, state, hf_data("causal_lm"), tasks[2])
    assert set(res.tensors) == set(tasks[2].tensor_names) and res.metrics["steps"] == 3


@pytest.mark.parametrize("mode", ["per_epoch", "per_iteration"])
def test_spry_runs_in_the_engine(make_experiment, mode):
    from fedtune.engine import run_experiment

    exp = make_experiment(**{"rounds": 2, "algorithm": {"name": "spry", "communication": mode, "lr": 1e-2, "batch_size": 16}, "server.name": "fedyogi"})
    metrics = run_experiment(exp).metrics
    assert len(metrics) == 2 and "test_accuracy" in metrics[-1]
    assert all(0 < m["bytes_up"] <= m["bytes_down"] for m in metrics)
    if mode == "per_iteration":  # one float32 per local step instead of the tensors
        assert all(m["bytes_up"] == 4 * sum(m["client_steps"].values()) for m in metrics)
