import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedtune.algorithms import ALGORITHMS
from fedtune.cli import app

runner = CliRunner()

EXP = """
name = "{name}"
rounds = 2
clients_per_round = 3
output = "{out}"
[data]
name = "digits"
num_clients = 6
partition = "dirichlet"
alpha = 0.5
[model]
name = "logreg"
[algorithm]
name = "{algo}"
lr = 0.1
"""


def write(tmp_path, name="a", algo="fedavg"):
    path = tmp_path / f"{name}.toml"
    path.write_text(EXP.format(name=name, out=tmp_path / "runs" / name, algo=algo))
    return path


def test_help_explains_options():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "--resume" in result.output and "--set" in result.output


def test_run_and_resume(tmp_path):
    path = write(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "a"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    again = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert again.exit_code == 0, again.output


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    path = write(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--set", "data.alpha=0", "--quiet"])
    assert result.exit_code == 2
    assert "data.alpha" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
    result = runner.invoke(app, ["run", str(path), "--set", "data.num_clients=100000", "--quiet"])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists()


def test_compare_writes_table_and_plots(tmp_path):
    a, b = write(tmp_path, "a", "fedavg"), write(tmp_path, "b", "fedprox")
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(a), str(b), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["a", "b"]
    assert (out / "test_accuracy.png").exists()
    assert "| a |" in (out / "comparison.md").read_text()


def test_datasets_list_and_show(tmp_path):
    listed = runner.invoke(app, ["datasets", "list"])
    assert listed.exit_code == 0 and "mnist" in listed.output
    shown = runner.invoke(app, ["datasets", "show", "digits", "--partition", "dirichlet", "--alpha", "0.3", "--clients", "5", "--out", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert (tmp_path / "digits_dirichlet_a0.3_5c_seed0_labels.png").exists()  # named after the partition: no overwrite
    assert "1797 examples (train" in shown.output and "label skew" in shown.output
    assert "empty" not in shown.output
    other = runner.invoke(app, ["datasets", "show", "digits", "--partition", "iid", "--clients", "5", "--out", str(tmp_path)])
    assert other.exit_code == 0 and (tmp_path / "digits_iid_5c_seed0_labels.png").exists()
    bad = runner.invoke(app, ["datasets", "show", "digits", "--alpha", "0"])
    assert bad.exit_code == 2 and "alpha" in bad.output


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_fedavg.toml"


def test_help_names_only_what_exists():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Spry" in result.output and "Flash" in result.output
    assert re.search(r"\bFlow\b", result.output)  # built: algorithms/flow.py
    assert ALGORITHMS.get("flow")


@pytest.mark.parametrize(
    "override, field",
    [
        ('server.lr="abc"', "server.lr"),
        ("server.gamma=1", "server.gamma"),
        ('model.name="hf:/no/such/folder"', "model.name"),
        ('data.name="hf:/no/such/folder"', "data.name"),
        ('data.partition="shards"', "data.partition"),
        ('drift.kind="blur"', "drift.kind"),
        ('algorithm.name="flash"', "server.name"),  # the demo's server is fedavg
    ],
)
def test_bad_demo_override_is_one_line_exit_2(tmp_path, override, field):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(DEMO), "--set", "rounds=1", "--set", override, "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ('model.name="hf:bert-base-uncased"', "error: model.name: cannot download 'bert-base-uncased' from the Hugging Face hub"),
        ('data.name="hf:stanfordnlp/imdb"', "error: data.name: cannot download 'stanfordnlp/imdb' from the Hugging Face hub"),
    ],
)
def test_hub_id_without_network_is_one_line_exit_2(tmp_path, override, expected):
    # A fresh process with an empty cache in offline mode: what a machine without network sees.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from fedtune.cli import main; main()", "run", str(DEMO), "--set", "rounds=1",
           "--set", "model.options={}", "--set", override, "--out", str(tmp_path / "run"), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "hf download" in lines[0] and '= "hf:DIR"' in lines[0]
    assert not (tmp_path / "run").exists()


def test_compare_run_folders_names_overrides_and_targets(tmp_path):
    a = write(tmp_path, "a", "fedavg")
    assert runner.invoke(app, ["run", str(a), "--quiet"]).exit_code == 0
    run_a = tmp_path / "runs" / "a"
    before = (run_a / "metrics.jsonl").read_text()
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    def args(lr="1.0"):
        return ["compare", str(run_a), str(a), str(a), "--name", "folder", "--name", "lr01", "--name", "lr1",
                "--set-for", f"lr1:algorithm.lr={lr}", "--out", str(out), "--target", "0.2", "--quiet"]

    result = runner.invoke(app, args())
    assert result.exit_code == 0, result.output
    assert (run_a / "metrics.jsonl").read_text() == before  # a run folder is read, not run again
    assert "lr = 1.0" in (out / "lr1" / "config.toml").read_text() and "lr = 0.1" in (out / "lr01" / "config.toml").read_text()
    table = json.loads((out / "comparison.json").read_text())
    assert table["target"] == 0.2 and [r["run"] for r in table["rows"]] == ["folder", "lr01", "lr1"]
    folder, lr01 = table["rows"][0], table["rows"][1]
    assert {k: v for k, v in folder.items() if k != "run" and k != "wall_s" and k != "s_to_target"} == {
        k: v for k, v in lr01.items() if k != "run" and k != "wall_s" and k != "s_to_target"}  # same run, same figures
    assert "dirichlet partition (α 0.5)" in (out / "comparison.md").read_text()
    assert (out / "notes.txt").read_text() == "mine"
    # again: the finished runs are read back; another configuration in lr1 is refused, then replaced
    again = runner.invoke(app, args())
    assert again.exit_code == 0, again.output
    changed = runner.invoke(app, args("0.5"))
    assert changed.exit_code == 2 and "another configuration" in changed.output, changed.output
    replaced = runner.invoke(app, [*args("0.5"), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert "lr = 0.5" in (out / "lr1" / "config.toml").read_text() and (out / "notes.txt").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "compare: the runs' names must differ"),
        (["--name", "x"], "--name: give one name per entry (2), got 1"),
        (["--name", "x", "--name", "y", "--set-for", "z:rounds=1"], "--set-for z:...: no experiment named 'z'"),
    ],
)
def test_compare_refuses_ambiguous_names(tmp_path, extra, message):
    a = write(tmp_path, "a", "fedavg")
    result = runner.invoke(app, ["compare", str(a), str(a), "--out", str(tmp_path / "cmp"), "--quiet", *extra])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "cmp").exists()


def test_rounds_seconds_and_mb_to_target_by_hand():
    from fedtune.report.summary import summarize

    metrics = [
        {"round": 1, "bytes_up": 1_000_000, "bytes_down": 2_000_000, "failures": [], "wall_s": 1.5},
        {"round": 2, "bytes_up": 1_000_000, "bytes_down": 2_000_000, "failures": [], "wall_s": 2.0, "test_accuracy": 0.5},
        {"round": 3, "bytes_up": 1_000_000, "bytes_down": 2_000_000, "failures": [], "wall_s": 1.0, "test_accuracy": 0.8},
    ]
    row = summarize("r", metrics, target=0.6)
    assert (row["rounds_to_target"], row["s_to_target"], row["mb_to_target"]) == (3, 4.5, 9.0)
    assert summarize("r", metrics, target=0.5)["rounds_to_target"] == 2
    never = summarize("r", metrics, target=0.9)
    assert never["rounds_to_target"] is None and never["mb_to_target"] is None


def test_datasets_show_warns_about_empty_validation_and_test_splits(tmp_path):
    shown = runner.invoke(app, ["datasets", "show", "digits", "--partition", "dirichlet", "--alpha", "0.1", "--clients", "200",
                                "--out", str(tmp_path), "--max-rows", "1"])
    assert shown.exit_code == 0, shown.output
    warnings = [line for line in shown.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "empty val split" in warnings[0] and "empty test split" in warnings[1]
    assert "raise data.val_fraction" in warnings[0]


def test_version_and_short_help():
    import fedtune

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith(f"fedtune {fedtune.__version__} (torch ")
    assert runner.invoke(app, ["-h"]).exit_code == 0 and "--version" in runner.invoke(app, ["-h"]).output
    assert "--seeds" in runner.invoke(app, ["run", "-h"]).output


def test_bench_memory_tables_are_whole_when_piped():
    import io

    from rich.console import Console

    from fedtune.measure.cli import print_memory

    step = {"peak_above_model": 3 * 2**20, "rss_peak": 500 * 2**20, "rss_peak_above_load": 40 * 2**20, "weights": 90 * 2**20,
            "breakdown": {"activations": 2**20, "gradients": 2**20, "tangents": None, "optimizer_state": 2**20}}
    results = [{"method": "backprop", **step}, {"method": "inference", **step}, {"method": "spry_per_iteration", **step}]
    summary = {"model": "minilm", "batch": 16, "seq": 128, "results": results,
               "ratios": {"spry_per_iteration/backprop": 0.25, "spry_per_iteration/inference": 1.5}}
    out = io.StringIO()
    print_memory(summary, Console(file=out, width=160))
    text = out.getvalue()
    for header in ("peak above model", "activations", "gradients", "tangents", "optimizer", "peak RSS", "RSS above load"):
        assert header in text
    assert "spry_per_iteration" in text and "…" not in text  # no column cut
    ratio_line = next(line for line in text.splitlines() if line.strip("│ ").startswith("spry_per_iteration") and "0.250" in line)
    assert "1.500" in ratio_line


def test_examples_ship_with_the_package_and_copy(tmp_path):
    import fnmatch
    import tomllib

    from fedtune.example_files import examples_dir

    source = Path(__file__).resolve().parents[1] / "examples"
    assert examples_dir().resolve() == source.resolve()  # the package's examples are the README's
    globs = tomllib.loads((source.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fedtune"]
    for path in source.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = str(path.relative_to(source.parent))
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} would not be in the wheel"
    listed = runner.invoke(app, ["examples", "list"])
    assert listed.exit_code == 0
    for toml in source.glob("*.toml"):
        assert toml.stem in listed.output
    assert "plugin" in listed.output and "FedAvg clients that clip their updates" in listed.output
    copied = runner.invoke(app, ["examples", "copy", "demo_fedavg", "plugin", "--to", str(tmp_path)])
    assert copied.exit_code == 0, copied.output
    assert (tmp_path / "demo_fedavg.toml").read_text() == (source / "demo_fedavg.toml").read_text()
    assert (tmp_path / "plugin" / "myfl.py").exists()
    again = runner.invoke(app, ["examples", "copy", "demo_fedavg", "--to", str(tmp_path)])
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
    assert runner.invoke(app, ["examples", "copy", "demo_fedavg", "--to", str(tmp_path), "--overwrite"]).exit_code == 0
    unknown = runner.invoke(app, ["examples", "copy", "nope", "--to", str(tmp_path)])
    assert unknown.exit_code == 2 and "no example named 'nope'" in unknown.output


def test_readme_library_example_runs_from_any_folder(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Library\n.*?```python\n(.*?)```", readme, re.S).group(1)
    assert '"rounds=3"' in block
    monkeypatch.chdir(tmp_path)  # not the fedtune folder: the example finds the shipped experiment itself
    exec(compile(block.replace('"rounds=3"', '"rounds=1"'), "README.md", "exec"), {})  # one round: the same code, faster
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < accuracy < 1
    assert len((tmp_path / "runs" / "library-demo" / "metrics.jsonl").read_text().splitlines()) == 1
