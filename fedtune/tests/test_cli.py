import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["run"] for r in rows] == ["a", "b"]
    assert (out / "test_accuracy.png").exists()
    assert "| a |" in (out / "comparison.md").read_text()


def test_datasets_list_and_show(tmp_path):
    listed = runner.invoke(app, ["datasets", "list"])
    assert listed.exit_code == 0 and "mnist" in listed.output
    shown = runner.invoke(app, ["datasets", "show", "digits", "--partition", "dirichlet", "--alpha", "0.3", "--clients", "5", "--out", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert (tmp_path / "digits_dirichlet_labels.png").exists()
    bad = runner.invoke(app, ["datasets", "show", "digits", "--alpha", "0"])
    assert bad.exit_code == 2 and "alpha" in bad.output


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_fedavg.toml"


def test_help_names_only_what_exists():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Spry" in result.output and "Flash" in result.output
    assert re.search(r"\bFlow\b", result.output) is None  # not built yet (Flower is)


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
