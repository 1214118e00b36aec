import json

import pytest

from fedtune.algorithms import Client
from fedtune.config import ConfigError
from fedtune.engine import Run, RunError, resume_experiment, run_experiment

TIMES = ("wall_s", "client_s", "eval_s")


def without_times(metrics):
    return [{k: v for k, v in m.items() if k not in TIMES} for m in metrics]


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_folder_and_learns(make_experiment):
    exp = make_experiment(rounds=6)
    result = run_experiment(exp)
    d = result.run_dir
    for name in ("config.toml", "metrics.jsonl", "report.md", "train_loss.png", "test_accuracy.png"):
        assert (d / name).exists(), name
    assert sorted(p.name for p in (d / "checkpoints").glob("*.pt")) == ["round_00004.pt", "round_00006.pt"]
    metrics = read_metrics(d)
    assert [m["round"] for m in metrics] == list(range(1, 7))
    assert all(len(m["sampled"]) == 4 for m in metrics)
    assert "test_accuracy" in metrics[1] and "test_accuracy" not in metrics[0]
    assert metrics[-1]["test_accuracy"] > 0.5
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[0]["bytes_up"] > 0 and metrics[0]["bytes_down"] == metrics[0]["bytes_up"]
    assert sum(metrics[0]["client_bytes_up"].values()) == metrics[0]["bytes_up"]
    assert sorted(int(c) for c in metrics[0]["client_bytes_down"]) == metrics[0]["sampled"]


def test_same_seed_same_metrics_and_other_seed_differs(make_experiment, tmp_path):
    a = run_experiment(make_experiment(output=str(tmp_path / "a"))).metrics
    b = run_experiment(make_experiment(output=str(tmp_path / "b"))).metrics
    c = run_experiment(make_experiment(output=str(tmp_path / "c"), seed=4)).metrics
    assert without_times(a) == without_times(b)
    assert without_times(a) != without_times(c)


def test_resumed_run_equals_uninterrupted(make_experiment, tmp_path):
    full = run_experiment(make_experiment(output=str(tmp_path / "full"), rounds=5, server={"name": "fedyogi", "lr": 0.05}))

    def interrupt(rnd, record):
        if rnd == 3:
            raise KeyboardInterrupt

    exp = make_experiment(output=str(tmp_path / "cut"), rounds=5, server={"name": "fedyogi", "lr": 0.05})
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, progress=interrupt)
    assert len(read_metrics(tmp_path / "cut")) == 3  # rounds 1-3 written, checkpoint at 2
    resumed = resume_experiment(tmp_path / "cut")
    assert without_times(resumed.metrics) == without_times(full.metrics)
    assert without_times(read_metrics(tmp_path / "cut")) == without_times(full.metrics)


def test_failing_client_is_recorded_and_round_goes_on(make_experiment, monkeypatch):
    original = Client.fit

    def flaky(self, model, trainable, data, task, state=None):
        if task.client_id == 0:
            raise RuntimeError("disk full")
        return original(self, model, trainable, data, task, state)

    monkeypatch.setattr(Client, "fit", flaky)
    exp = make_experiment(rounds=3, clients_per_round=8)
    metrics = run_experiment(exp).metrics
    for m in metrics:
        assert m["failures"] == [{"client": 0, "round": m["round"], "error": m["failures"][0]["error"]}]
        assert "RuntimeError: disk full" in m["failures"][0]["error"]


def test_too_many_failures_stop_the_run_with_a_clear_error(make_experiment):
    exp = make_experiment(rounds=2, algorithm={"name": "fedavg", "lr": 1e30, "batch_size": 16})
    with pytest.raises(RunError, match=r"round 1: only 0 of 4 clients succeeded"):
        run_experiment(exp)


def test_existing_run_is_not_overwritten_silently(make_experiment):
    exp = make_experiment(rounds=1)
    run_experiment(exp)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment(exp)
    run_experiment(exp, overwrite=True)


@pytest.mark.parametrize("algorithm", ["fedprox", "fedsgd"])
@pytest.mark.parametrize("server", ["fedadam", "fedyogi", "fedadagrad"])
def test_every_algorithm_and_server_optimizer_runs(make_experiment, algorithm, server):
    exp = make_experiment(rounds=2, algorithm={"name": algorithm, "lr": 0.1}, server={"name": server, "lr": 0.01})
    untrained = Run(exp).evaluate(0)["test_loss"]
    metrics = run_experiment(exp, report=False).metrics
    assert metrics[-1]["test_loss"] < untrained - 0.003  # two small server steps, but downhill


def test_personalized_evaluation(make_experiment):
    exp = make_experiment(rounds=2, eval={"every": 1, "finetune_epochs": 1, "personalized_clients": 3})
    metrics = run_experiment(exp, report=False).metrics
    assert 0.0 <= metrics[-1]["personalized_accuracy"] <= 1.0


@pytest.mark.parametrize("server", [{"name": "fedavg"}, {"name": "fedyogi", "lr": 0.05}, {"name": "flash", "lr": 0.05}])
def test_client_with_nan_tensors_is_dropped_and_server_state_kept_clean(make_experiment, monkeypatch, server):
    original = Client.fit

    def poisoned(self, model, trainable, data, task, state=None):
        result, new_state = original(self, model, trainable, data, task, state)
        if task.client_id == 2:
            name = next(iter(result.tensors))
            result.tensors[name] = result.tensors[name].clone().fill_(float("nan"))
        return result, new_state

    monkeypatch.setattr(Client, "fit", poisoned)
    metrics = run_experiment(make_experiment(rounds=3, clients_per_round=8, server=server), report=False).metrics
    for m in metrics:
        assert m["failures"] == [{"client": 2, "round": m["round"], "error": m["failures"][0]["error"]}]
        assert "non-finite values in tensor" in m["failures"][0]["error"]
        assert m.get("test_accuracy", 0.0) == m.get("test_accuracy", 0.0)  # never NaN
        assert "2" not in m["client_bytes_up"] and len(m["client_bytes_up"]) == 7
