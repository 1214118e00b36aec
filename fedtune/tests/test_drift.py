"""The concept-drift simulator, its configuration, the engine hook and the drift report."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedtune.config import ConfigError, load_experiment
from fedtune.data.base import ClientData, DatasetInfo, Examples
from fedtune.data.drift import DriftConfig, DriftSimulator
from fedtune.report.drift import drift_metrics, drift_report, plot_drift

INFO = DatasetInfo(name="toy", task="classification", num_classes=10, input_shape=(1, 4, 4))


def _examples(n: int = 40, seed: int = 0) -> Examples:
    g = torch.Generator().manual_seed(seed)
    return Examples({"x": torch.randn(n, 1, 4, 4, generator=g), "labels": torch.arange(n) % 10})


def _data() -> ClientData:
    return ClientData(train=_examples(40, 0), val=_examples(10, 1), test=_examples(20, 2))


def _sim(**kw) -> DriftSimulator:
    return DriftSimulator.from_config(DriftConfig(**kw), INFO, seed=7)


def test_schedules() -> None:
    sudden = _sim(schedule="sudden", start=5)
    assert [sudden.concept(3, r) for r in (1, 4, 5, 30)] == [0, 0, 1, 1]
    assert sudden.drift_rounds(40) == [5] and sudden.drift_rounds(4) == []
    inc = _sim(schedule="incremental", start=10, groups=3, interval=4)
    assert [inc.concept(c, 13) for c in range(6)] == [1, 0, 0, 1, 0, 0]  # group = client id mod 3
    assert [inc.concept(2, r) for r in (17, 18)] == [0, 1]  # group 2 drifts at 10 + 2·4
    assert inc.drift_rounds(40) == [10, 14, 18]
    rec = _sim(schedule="recurrent", start=10, period=5)
    assert [rec.concept(0, r) for r in (9, 10, 14, 15, 19, 20)] == [0, 1, 1, 0, 0, 1]
    assert rec.drift_rounds(24) == [10, 15, 20]


def test_label_swap_exchanges_pairs_everywhere() -> None:
    sim = _sim(kind="label_swap", start=2, pairs=3)
    data = _data()
    assert sim.apply(0, 1, data) is data  # concept 0: untouched
    drifted = sim.apply(0, 2, data)
    mapping = sim.kind.mapping
    assert sorted(mapping.tolist()) == list(range(10)) and (mapping[mapping] == torch.arange(10)).all()
    assert int((mapping != torch.arange(10)).sum()) == 6
    for split in ("train", "val", "test"):
        before, after = getattr(data, split), getattr(drifted, split)
        assert torch.equal(after.labels, mapping[before.labels])
        assert torch.equal(after.tensors["x"], before.tensors["x"])
    assert torch.equal(sim.apply_examples(0, 2, data.test).labels, drifted.test.labels)  # test drifts alike
    assert torch.equal(_sim(kind="label_swap", start=2, pairs=3).kind.mapping, mapping)  # seeded
    assert _sim(kind="label_swap", swap=[(0, 9)]).kind.pairs == [(0, 9)]
    ignored = Examples({"x": torch.zeros(2, 1, 4, 4), "labels": torch.tensor([-100, 0])})
    assert sim.apply_examples(0, 5, ignored).labels[0] == -100


def test_label_shift_changes_priors_with_a_fixed_subset() -> None:
    sim = _sim(kind="label_shift", start=1, shift_alpha=0.3)
    data = ClientData(train=_examples(400), val=_examples(10), test=_examples(200))
    a, b = sim.apply(4, 3, data), sim.apply(4, 9, data)
    assert torch.equal(a.train.labels, b.train.labels)  # the same subset every round
    assert 0 < len(a.train) < 400
    counts = torch.bincount(a.train.labels, minlength=10).float()
    keep = sim.kind.keep_prob.float()
    assert counts[keep.argmax()] > counts[keep.argmin()]
    assert torch.equal(sim.apply_examples(4, 3, data.test).labels, a.test.labels)


def test_feature_drift_permutes_or_rotates() -> None:
    data = _data()
    perm = _sim(kind="feature", feature="permute", start=1)
    x0, x1 = data.train.tensors["x"], perm.apply(1, 1, data).train.tensors["x"]
    assert torch.equal(x1.flatten(1), x0.flatten(1)[:, perm.kind.perm])
    assert torch.equal(perm.apply(2, 1, data).train.tensors["x"], x1)  # same permutation for every client
    rot = _sim(kind="feature", feature="rotate", angle=90, start=1)
    assert torch.equal(rot.apply(0, 1, data).train.tensors["x"], torch.rot90(x0, 1, dims=(-2, -1)))
    odd = _sim(kind="feature", feature="rotate", angle=30, start=1).apply(0, 1, data).train.tensors["x"]
    assert odd.shape == x0.shape and torch.isfinite(odd).all() and not torch.equal(odd, x0)


def test_bad_drift_settings_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match="drift.pairs"):
        _sim(kind="label_swap", pairs=6)
    text = DatasetInfo(name="text", task="causal_lm", num_classes=50)
    with pytest.raises(ValueError, match="classification"):
        DriftSimulator.from_config(DriftConfig(kind="label_swap"), text, 0)
    with pytest.raises(ConfigError, match=r"^drift\.kind: "):
        load_experiment(raw={"drift": {"kind": "rotation"}})
    with pytest.raises(ConfigError, match=r"^drift\.speed: unknown key"):
        load_experiment(raw={"drift": {"speed": 2}})


def test_drift_table_in_experiment_toml_round_trips(tmp_path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('rounds = 3\n[drift]\nkind = "feature"\nschedule = "recurrent"\nstart = 2\nperiod = 3\n')
    exp = load_experiment(path)
    assert exp.drift == DriftConfig(kind="feature", schedule="recurrent", start=2, period=3)
    again = tmp_path / "again.toml"
    again.write_text(exp.to_toml())
    assert load_experiment(again).drift == exp.drift
    assert load_experiment(raw={}).drift is None


def test_config_imports_first_without_a_cycle() -> None:
    code = "import fedtune.config, fedtune.data.drift; print(fedtune.config.Experiment.model_fields['drift'])"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_engine_evaluates_on_the_drifted_concept(tmp_path) -> None:
    from fedtune.engine import run_experiment

    raw = {
        "rounds": 4,
        "clients_per_round": 4,
        "output": str(tmp_path / "run"),
        "data": {"name": "digits", "num_clients": 8},
        "model": {"name": "logreg"},
        "algorithm": {"name": "flash", "local_epochs": 3, "lr": 0.1, "early_stop_gamma": 0.0},
        "server": {"name": "flash", "lr": 0.05},
        "drift": {"kind": "label_swap", "start": 3, "pairs": 5},
        "checkpoint": {"every": 0},
    }
    metrics = run_experiment(load_experiment(raw=raw), report=False).metrics
    acc = [m["test_accuracy"] for m in metrics]
    assert acc[1] > 0.5 and acc[2] < acc[1] - 0.3  # all ten digits relabelled at round 3
    assert all("eff_lr_mean" in m and "flash_guarded" in m and "client_epochs" in m for m in metrics)


CURVE = [0.5, 0.8, 0.9, 0.3, 0.5, 0.86, 0.9, 0.2, 0.9]  # rounds 1..9, drifts at 4 and 8


def test_drift_metrics_by_hand(tmp_path) -> None:
    metrics = [{"round": r + 1, "test_accuracy": a, "eff_lr_mean": 0.01 * (r + 1)} for r, a in enumerate(CURVE)]
    first, second = drift_metrics(metrics, [4, 8])
    assert first["pre_accuracy"] == 0.9 and first["lowest_accuracy"] == 0.3 and first["lowest_round"] == 4
    assert first["recovery_rounds"] == 2  # round 6: 0.86 ≥ 0.95·0.9 = 0.855
    # window rounds 4..7: trapezoids (0.3+0.5)/2 + (0.5+0.86)/2 + (0.86+0.9)/2 = 1.96, over 3 rounds
    assert first["auc"] == pytest.approx(1.96 / 3)
    assert second["pre_accuracy"] == 0.9 and second["lowest_accuracy"] == 0.2 and second["recovery_rounds"] == 1
    assert second["auc"] == pytest.approx(0.55)
    whole = drift_metrics(metrics, [4, 8], until_next=False)[0]
    assert whole["lowest_accuracy"] == 0.2 and whole["recovery_rounds"] == 5  # after the lowest, round 9
    never = drift_metrics(metrics[:5], [4])[0]
    assert never["recovery_rounds"] is None
    out = plot_drift({"flash": metrics, "fedavg": [{"round": 1, "test_accuracy": 0.1}]}, [4, 8], tmp_path / "d.png")
    assert out.stat().st_size > 0
    lines = drift_report(tmp_path, DriftConfig(schedule="recurrent", start=4, period=4), 9, metrics)
    assert "| 4 | 0.9000 | 0.3000 | 2 | 0.6533 |" in lines and (tmp_path / "drift.png").exists()
