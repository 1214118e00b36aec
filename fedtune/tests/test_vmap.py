"""The vmap backend: clients trained together equal clients trained one after another
(ragged data, momentum, several epochs, Adam, FedProx), failing clients are failed clients,
and what it cannot run is refused in one line before anything is written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS, Algorithm, Client, ClientResult
from fedtune.data import load_federated
from fedtune.engine import run_experiment
from fedtune.engine import vmap_backend as vb
from fedtune.engine.backend import InProcessBackend
from fedtune.engine.loop import Run
from fedtune.engine.worker import ClientFailure
from fedtune.errors import ConfigError

CASES = {
    "sgd": {},
    "momentum-decay-3-epochs": {"algorithm.momentum": 0.9, "algorithm.weight_decay": 0.01, "algorithm.local_epochs": 3},
    "adam-2-epochs": {"algorithm.optimizer": "adam", "algorithm.lr": 0.01, "algorithm.weight_decay": 0.01, "algorithm.local_epochs": 2},
    "adamw-max-steps": {"algorithm.optimizer": "adamw", "algorithm.lr": 0.01, "algorithm.weight_decay": 0.1, "algorithm.max_steps": 20},
    "fedprox-momentum": {"algorithm.name": "fedprox", "algorithm.mu": 0.5, "algorithm.momentum": 0.5},
}


def both_backends(exp, fed=None):
    """One round's tasks run sequentially and vectorized, from the same global state."""
    run = Run(exp, fed)
    clients = list(range(exp.clients_per_round))
    tasks = list(run.algorithm.configure_round(1, clients, run.global_state, exp.seed).values())
    sizes = [len(run.federation.fed.clients[c].train) for c in clients]
    sequential = InProcessBackend(exp, run.worker).run(tasks, run.global_state, {})
    vectorized = vb.VmapBackend(exp, run.worker).run(tasks, run.global_state, {})
    return sizes, [r.outcome for r in sequential], [r.outcome for r in vectorized]


def assert_same_result(a: ClientResult, b: ClientResult) -> None:
    assert (a.client_id, a.num_examples, a.bytes_up) == (b.client_id, b.num_examples, b.bytes_up)
    assert (a.metrics["steps"], a.metrics["epochs"]) == (b.metrics["steps"], b.metrics["epochs"])
    assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-5, abs=1e-6)
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        torch.testing.assert_close(b.tensors[name], a.tensors[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_clients_trained_together_equal_clients_trained_one_by_one(make_experiment, case):
    sizes, sequential, vectorized = both_backends(make_experiment(clients_per_round=8, **CASES[case]))
    steps = [r.metrics["steps"] for r in sequential]
    assert len(set(steps)) > 1, "the clients must be ragged: some run out of batches before others"
    assert min(sizes) % 16 != 0  # and some last batch is short (batch size 16)
    for a, b in zip(sequential, vectorized, strict=True):
        assert_same_result(a, b)
    if case == "adamw-max-steps":  # clients past max_steps stop, also across epochs
        assert max(steps) == 20 and min(steps) < 20


LOW_RANK_CASES = {
    "sgd": {},
    "momentum-decay-3-epochs": CASES["momentum-decay-3-epochs"],
    "momentum-decay-max-steps": {"algorithm.momentum": 0.9, "algorithm.weight_decay": 0.1, "algorithm.local_epochs": 3, "algorithm.max_steps": 20},
}


@pytest.mark.parametrize("case", list(LOW_RANK_CASES))
def test_low_rank_clients_equal_clients_trained_one_by_one(make_experiment, monkeypatch, case):
    """SGD on the MLP as the global weights plus low-rank updates (forced here for every
    client; no stacked copy may train) equals torch.optim.SGD on each client."""
    monkeypatch.setattr(vb, "cheaper_than_copies", lambda *args: True)
    monkeypatch.setattr(vb.VmapBackend, "_train", lambda *args: pytest.fail("stacked copies trained"))
    _, sequential, vectorized = both_backends(make_experiment(clients_per_round=8, **LOW_RANK_CASES[case]))
    for a, b in zip(sequential, vectorized, strict=True):
        assert_same_result(a, b)


def test_short_clients_train_as_low_rank_updates_and_long_ones_as_copies(make_experiment, monkeypatch):
    """The default choice in one round: clients with few steps (rows ≤ 2·Σ in·out / Σ(in+out)
    = 34 for the 64-32-10 MLP: 4 batches of 8) as low-rank updates, the others as copies."""
    ran = {"copies": 0, "low rank": 0}
    for name, key in (("_train", "copies"), ("_train_low_rank", "low rank")):
        original = getattr(vb.VmapBackend, name)
        monkeypatch.setattr(vb.VmapBackend, name, lambda self, group, state, f=original, k=key: ran.update({k: ran[k] + len(group)}) or f(self, group, state))
    exp = make_experiment(clients_per_round=20, **{"data.num_clients": 40, "algorithm.batch_size": 8, "algorithm.local_epochs": 1})
    sizes, sequential, vectorized = both_backends(exp)
    assert ran == {"low rank": sum(s <= 32 for s in sizes), "copies": sum(s > 32 for s in sizes)} and min(ran.values()) > 0
    for a, b in zip(sequential, vectorized, strict=True):
        assert_same_result(a, b)


def test_groups_of_clients_equal_one_group(make_experiment, monkeypatch):
    """On a CPU the clients train in groups of similar size; results come back in task order."""
    exp = make_experiment(clients_per_round=8, **CASES["momentum-decay-3-epochs"])
    _, sequential, _ = both_backends(exp)
    monkeypatch.setattr(vb, "CPU_GROUP_BYTES", 3 * vb.state_bytes(Run(exp).global_state))  # groups of 3
    _, _, grouped = both_backends(exp)
    for a, b in zip(sequential, grouped, strict=True):
        assert_same_result(a, b)


def test_a_run_on_vmap_equals_the_inprocess_run(make_experiment, tmp_path):
    common = {"rounds": 3, "server": {"name": "fedyogi", "lr": 0.03}, "algorithm.momentum": 0.5}
    local = run_experiment(make_experiment(output=str(tmp_path / "local"), **common), report=False).metrics
    vmap = run_experiment(make_experiment(output=str(tmp_path / "vmap"), backend="vmap", **common), report=False).metrics
    for a, b in zip(local, vmap, strict=True):
        assert a["sampled"] == b["sampled"] and a["client_steps"] == b["client_steps"] and b["failures"] == []
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        if "test_accuracy" in a:
            assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=0.01)
    assert vmap[-1]["test_accuracy"] > 0.3  # digits: chance is 0.1


def test_a_client_whose_loss_turns_non_finite_fails_alone(make_experiment, monkeypatch):
    exp = make_experiment(clients_per_round=4)
    fed = load_federated(exp.data, exp.seed)
    fed.clients[2].train.tensors["x"][5] = float("inf")  # one poisoned example
    _, sequential, vectorized = both_backends(exp, fed)
    assert [type(r).__name__ for r in vectorized] == ["ClientResult", "ClientResult", "ClientFailure", "ClientResult"]
    assert isinstance(sequential[2], ClientFailure)
    # the same step fails: "FloatingPointError: non-finite training loss (nan) at local step k (...)"
    assert vectorized[2].error.rsplit(" (", 1)[0] == sequential[2].error.rsplit(" (", 1)[0]
    for i in (0, 1, 3):
        assert_same_result(sequential[i], vectorized[i])
    monkeypatch.setattr(vb, "cheaper_than_copies", lambda *args: True)  # the same as low-rank updates
    _, _, low_rank = both_backends(exp, fed)
    assert low_rank[2].error.rsplit(" (", 1)[0] == sequential[2].error.rsplit(" (", 1)[0]
    for i in (0, 1, 3):
        assert_same_result(sequential[i], low_rank[i])


class CountingClient(Client):
    stateful = True

    def fit(self, model, global_state, data, task, state=None):
        result, _ = super().fit(model, global_state, data, task)
        return result, {"visits": 1 if state is None else state["visits"] + 1}


@ALGORITHMS.register("test-vmap-stateful")
class Counting(Algorithm):
    name = "test-vmap-stateful"
    Client = CountingClient


SPRY = {"algorithm": {"name": "spry", "batch_size": 16, "lr": 1e-3, "max_steps": 5}, "server": {"name": "fedyogi", "lr": 0.01}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (SPRY, "cannot run 'spry': its client procedure (EstimatedGradientClient) is not plain local training; it runs fedavg, fedprox"),
        ({"algorithm": {"name": "fedsgd"}}, "cannot run 'fedsgd'"),
        ({"algorithm": {"name": "test-vmap-stateful"}}, "cannot run 'test-vmap-stateful': its clients keep state between rounds"),
        ({"algorithm": {"name": "flash"}, "server": {"name": "flash"}}, "cannot stop clients early"),
    ],
)
def test_what_it_cannot_run_is_one_line_before_anything_is_written(make_experiment, tmp_path, overrides, message):
    exp = make_experiment(output=str(tmp_path / "run"), backend="vmap", **overrides)
    with pytest.raises(ConfigError) as err:
        run_experiment(exp)
    text = str(err.value)
    assert text.startswith('backend.name: "vmap" ') and message in text and text.endswith('use backend = "inprocess"')
    assert "\n" not in text and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("layer", "what"),
    [(nn.Dropout(0.1), "dropout"), (nn.BatchNorm1d(4), "batch normalisation"), (nn.LSTM(4, 4), "a recurrent layer")],
)
def test_models_whose_vectorized_step_would_differ_are_refused(make_experiment, layer, what):
    client = Client(ALGORITHMS.get("fedavg").Params())
    model = nn.Sequential(nn.Linear(4, 4), layer)
    with pytest.raises(ConfigError, match=f"cannot run a model with {what} \\(1: {type(layer).__name__}\\)"):
        vb.check_vectorizable(client, model, "fedavg")
    vb.check_vectorizable(client, nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0)), "fedavg")  # p = 0 is no dropout


def test_a_round_that_would_not_fit_in_memory_is_refused(make_experiment, tmp_path, monkeypatch):
    monkeypatch.setattr(vb, "free_memory", lambda device: 2**20)  # 1 MiB free
    exp = make_experiment(output=str(tmp_path / "run"), backend="vmap", clients_per_round=8, **{"algorithm.momentum": 0.9})
    run = Run(exp)
    largest = max(run.federation.fed.clients, key=lambda c: len(c.train))
    need = vb.estimate_bytes(run.worker.client.params, run.global_state, 8, largest)
    # per client: its trainables, their gradient, the momentum and a temporary, and its padded data (64 floats and a label each)
    assert need == 8 * (4 * vb.state_bytes(run.global_state) + len(largest.train) * (64 * 4 + 8))
    with pytest.raises(ConfigError, match=f"needs about {need / 2**20:,.0f} MiB for 8 stacked clients, more than half the 1 MiB free on cpu"):
        run_experiment(exp)
    assert not (tmp_path / "run").exists()
