"""``fedtune run --seeds/--sweep``: the grid, what is run again, the mean ± sd table."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from fedtune.cli import app
from fedtune.config import ConfigError, load_experiment
from fedtune.sweep import Axis, Point, parse_seeds, parse_sweep, setting_label, summarize_grid

runner = CliRunner()

EXP = """
name = "tiny"
rounds = 1
clients_per_round = 3
[data]
name = "digits"
num_clients = 6
[model]
name = "logreg"
[algorithm]
name = "fedavg"
lr = 0.1
"""


def test_parse_sweep_and_seeds():
    assert parse_sweep("algorithm.lr=0.01, 0.03,0.1") == Axis("algorithm.lr", (0.01, 0.03, 0.1))
    assert parse_sweep('algorithm.optimizer="sgd","adam"').values == ("sgd", "adam")
    assert parse_sweep("algorithm.optimizer=sgd,adam").values == ("sgd", "adam")  # bare words are strings
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5,9") == [3, 4, 5, 9]
    for bad in ["algorithm.lr", "algorithm.lr=0.1,0.1", "seed=1,2"]:
        with pytest.raises(ConfigError):
            parse_sweep(bad)
    for bad in ["a", "1,1", "-1", ""]:
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    assert setting_label({"algorithm.lr": 0.01, "algorithm.optimizer": "adam"}) == "algorithm.lr=0.01,algorithm.optimizer=adam"


def _metrics(acc: float, loss: float) -> list[dict]:
    return [{"round": 1, "bytes_up": 0, "failures": [], "test_accuracy": acc / 2, "test_loss": 9.0},
            {"round": 2, "bytes_up": 0, "failures": [], "test_accuracy": acc, "test_loss": loss}]


def test_mean_sd_and_best_by_hand():
    exp = load_experiment(raw={})
    a, b = {"algorithm.lr": 0.1}, {"algorithm.lr": 0.3}
    results = [(Point(a, 0, exp), _metrics(0.5, 1.0)), (Point(a, 1, exp), _metrics(0.7, 0.8)), (Point(a, 2, exp), _metrics(0.9, 0.6)),
               (Point(b, 0, exp), _metrics(0.7, 0.5)), (Point(b, 1, exp), _metrics(0.9, 0.7))]
    rows, best = summarize_grid(results)
    first = rows[0]
    assert first["final_test_accuracy"] == pytest.approx(0.7)
    assert first["final_test_accuracy_sd"] == pytest.approx(0.2)  # sample sd of 0.5, 0.7, 0.9
    assert rows[1]["final_test_accuracy_sd"] == pytest.approx(statistics.stdev([0.7, 0.9]))
    assert best["setting"] == "algorithm.lr=0.3" and best["seeds"] == [0, 1]
    _, by_loss = summarize_grid(results, "final_test_loss")  # lower is better
    assert by_loss["setting"] == "algorithm.lr=0.3"
    one, _ = summarize_grid(results[:1])
    assert one[0]["final_test_accuracy_sd"] is None  # one seed: no spread


def _run(args):
    return runner.invoke(app, ["run", *args, "--quiet"])


def test_grid_runs_only_what_is_missing(tmp_path):
    exp = tmp_path / "tiny.toml"
    exp.write_text(EXP)
    out = tmp_path / "grid"
    first = _run([str(exp), "--seeds", "0,1", "--sweep", "algorithm.lr=0.05,0.2", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "ran 4, found 0 finished" in first.output and "best (final_test_accuracy): algorithm.lr=" in first.output
    for lr in ("0.05", "0.2"):
        for seed in (0, 1):
            saved = (out / f"algorithm.lr={lr}" / f"seed{seed}" / "config.toml").read_text()
            assert f"seed = {seed}\n" in saved and f"lr = {lr}\n" in saved
    table = json.loads((out / "sweep.json").read_text())
    assert [r["setting"] for r in table["rows"]] == ["algorithm.lr=0.05", "algorithm.lr=0.2"]
    assert all(r["seeds"] == [0, 1] and r["final_test_accuracy_sd"] is not None for r in table["rows"])
    assert " ± " in (out / "sweep.md").read_text()

    # a third seed: only its two runs; the plain run of one point equals the grid's
    again = _run([str(exp), "--seeds", "0-2", "--sweep", "algorithm.lr=0.05,0.2", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "ran 2, found 4 finished" in again.output
    plain = _run([str(exp), "--set", "seed=2", "--set", "algorithm.lr=0.2", "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output

    def without_times(path):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in path.read_text().splitlines()]

    assert without_times(out / "algorithm.lr=0.2" / "seed2" / "metrics.jsonl") == without_times(tmp_path / "plain" / "metrics.jsonl")

    # another configuration in the same folders: refused, then replaced with --overwrite
    changed = _run([str(exp), "--seeds", "0", "--sweep", "algorithm.lr=0.05", "--set", "rounds=2", "--out", str(out)])
    assert changed.exit_code == 2 and "holds a run of another configuration" in changed.output
    replaced = _run([str(exp), "--seeds", "0", "--sweep", "algorithm.lr=0.05", "--set", "rounds=2", "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert len((out / "algorithm.lr=0.05" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 2


def test_unfinished_run_of_the_grid_resumes(tmp_path):
    exp = tmp_path / "tiny.toml"
    exp.write_text(EXP.replace("rounds = 1", "rounds = 2") + "[checkpoint]\nevery = 1\n")
    out = tmp_path / "grid"
    assert _run([str(exp), "--seeds", "0", "--out", str(out)]).exit_code == 0
    metrics = out / "seed0" / "metrics.jsonl"
    full = metrics.read_text()
    metrics.write_text(full.splitlines()[0] + "\n")  # as if stopped after round 1
    (out / "seed0" / "checkpoints" / "round_00002.pt").unlink()
    again = _run([str(exp), "--seeds", "0", "--out", str(out)])
    assert again.exit_code == 0 and "seed 0: resume" in again.output, again.output
    assert len(metrics.read_text().splitlines()) == 2


def test_bad_grid_value_is_one_line_before_anything_runs(tmp_path):
    exp = tmp_path / "tiny.toml"
    exp.write_text(EXP)
    out = tmp_path / "grid"
    result = _run([str(exp), "--sweep", "algorithm.lr=0.1,-1", "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: algorithm.lr=-1, seed 0: algorithm.lr: "), result.output
    assert not out.exists()
