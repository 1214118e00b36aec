import json

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
