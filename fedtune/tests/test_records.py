"""Run folders that stand on their own: the resolved config.toml with versions, git commit
and command line; Ctrl-C after a round; the final model and a LoRA adapter in peft's format."""

from __future__ import annotations

import json
import subprocess
import tomllib

import torch
from typer.testing import CliRunner

from fedtune.cli import app
from fedtune.config import load_experiment
from fedtune.engine import run_experiment
from fedtune.engine.checkpoint import latest_checkpoint, load_checkpoint
from fedtune.records import command_line, export_model, read_header

runner = CliRunner()

EXP = """
name = "rec"
rounds = 3
clients_per_round = 3
[data]
name = "digits"
num_clients = 6
[model]
name = "mlp"
[algorithm]
name = "fedprox"
lr = 0.1
[server]
name = "fedyogi"
[checkpoint]
every = 10
"""


def _without_times(path):
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in path.read_text().splitlines()]


def test_config_toml_is_resolved_and_records_where_it_came_from(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "exp.toml").write_text(EXP)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "exp.toml"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=tmp_path, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "exp.toml", "--set", "rounds=1", "--out", "run", "--quiet"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "run" / "config.toml").read_text()
    header = read_header(text)
    assert header["written by"].startswith("fedtune ") and f"torch {torch.__version__}" in header["written by"]
    assert header["git"] == f"{commit} in {tmp_path.resolve()}"  # the run folder is untracked: no uncommitted tracked changes
    assert header["at"].endswith("Z") and header["command"]
    saved = tomllib.loads(text)
    assert saved["algorithm"] == {"name": "fedprox", "local_epochs": 1, "batch_size": 32, "lr": 0.1, "optimizer": "sgd",
                                  "momentum": 0.0, "weight_decay": 0.0, "mu": 0.01}  # every default, None left out
    assert saved["server"] == {"name": "fedyogi", "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 0.001, "bias_correction": False}
    assert saved["model"]["options"]["hidden"]  # the builder's default sizes
    again = load_experiment(tmp_path / "run" / "config.toml")
    assert again.resolved() == saved  # loads back as the same experiment
    resumed = runner.invoke(app, ["run", "--resume", "run", "--set", "rounds=2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    header = read_header((tmp_path / "run" / "config.toml").read_text())
    assert header["git"] == f"{commit} in {tmp_path.resolve()}" and header["resumed"].endswith("Z")  # the first run's record kept


def test_config_toml_spells_out_every_datasets_option_defaults():
    from fedtune.data import DATASETS, options_model

    names = [*DATASETS.names(), "hf:some/dataset"]
    for name in names:
        model = options_model(name)
        assert model is not None, f"{name}: register it with register_dataset(name, OptionsModel)"
        options = tomllib.loads(load_experiment(raw={"data": {"name": name}}).to_toml())["data"]["options"]
        defaults = {k: f.default for k, f in model.model_fields.items() if f.default is not None}
        assert options == defaults, name  # each default, None (no TOML null) left out
    given = load_experiment(raw={"data": {"name": "shakespeare", "options": {"seq_len": 40}}}).resolved()
    assert given["data"]["options"] == {"seq_len": 40, "stride": 80, "min_chars": 2000, "max_roles": 100,
                                        "max_sequences_per_role": 200}  # a value given stays, the rest are the defaults
    bad = load_experiment(raw={"data": {"name": "synthetic", "options": {"colour": 1}}})
    assert bad.resolved()["data"]["options"] == {"colour": 1}  # refused when it loads; recorded as given


def test_a_run_folders_config_toml_reruns_the_same_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text(EXP.replace('name = "digits"', 'name = "synthetic"'))
    first = runner.invoke(app, ["run", "exp.toml", "--set", "rounds=2", "--set", "data.options.beta=0.5",
                                "--out", "one", "--quiet"])
    assert first.exit_code == 0, first.output
    saved = tomllib.loads((tmp_path / "one" / "config.toml").read_text())
    assert saved["data"]["options"] == {"alpha": 1.0, "beta": 0.5, "num_users": 30, "iid": False}
    again = runner.invoke(app, ["run", "one/config.toml", "--out", "two", "--quiet"])
    assert again.exit_code == 0, again.output
    assert _without_times(tmp_path / "two" / "metrics.jsonl") == _without_times(tmp_path / "one" / "metrics.jsonl")
    assert len(_without_times(tmp_path / "two" / "metrics.jsonl")) == 2
    assert tomllib.loads((tmp_path / "two" / "config.toml").read_text())["data"] == saved["data"]


def test_command_line_names_the_program():
    assert command_line(["/usr/local/bin/fedtune", "run", "a b.toml"]) == "fedtune run 'a b.toml'"


SIGINT_PLUGIN = """
import os, signal
from fedtune.algorithms import ALGORITHMS
from fedtune.algorithms.fedprox import FedProx

@ALGORITHMS.register("test-ctrl-c")
class CtrlC(FedProx):
    name = "test-ctrl-c"

    def aggregate(self, round, global_state, results):
        if round == 2:  # Ctrl-C while round 2 aggregates
            os.kill(os.getpid(), signal.SIGINT)
        return super().aggregate(round, global_state, results)
"""


def test_ctrl_c_finishes_the_round_writes_the_report_and_resumes_exactly(tmp_path):
    (tmp_path / "ctrlc.py").write_text(SIGINT_PLUGIN)
    exp = tmp_path / "exp.toml"
    exp.write_text('plugins = ["ctrlc.py"]\n' + EXP.replace('name = "fedprox"', 'name = "test-ctrl-c"'))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(exp), "--out", str(out), "--quiet"])
    assert result.exit_code == 130, result.output
    assert "interrupted after round 2 of 3" in result.output and f"fedtune run --resume {out}" in result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "| 2 |" in (out / "report.md").read_text()  # the report of the two rounds that ran
    assert load_checkpoint(latest_checkpoint(out))["round"] == 2
    assert not (out / "model.pt").exists()  # exported at the end of a finished run only
    # the resumed run equals one that was never interrupted (the plugin interrupts only at round 2)
    resumed = runner.invoke(app, ["run", "--resume", str(out), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    straight = load_experiment(exp)
    straight.algorithm.name = "fedprox"
    straight.output = str(tmp_path / "straight")
    run_experiment(straight)
    assert _without_times(out / "metrics.jsonl") == _without_times(tmp_path / "straight" / "metrics.jsonl")


def test_final_model_is_exported(tmp_path):
    exp = load_experiment(raw=tomllib.loads(EXP) | {"rounds": 2, "output": str(tmp_path / "run")})
    run_experiment(exp)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    final = load_checkpoint(latest_checkpoint(tmp_path / "run"))["global_state"]
    assert final and all(torch.equal(saved[k], v) for k, v in final.items())


def test_lora_adapter_loads_with_peft_alone(tiny_dir, tmp_path):
    from hf_tiny import text_batch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from fedtune.data.base import DatasetInfo
    from fedtune.models import build_model
    from fedtune.models.base import get_trainable, set_trainable

    model = build_model(f"hf:{tiny_dir['bert']}", DatasetInfo("t", "classification", 3), {"lora_b_init_std": 0.05}, seed=1)
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in get_trainable(model).items()}  # a "trained" global state
    set_trainable(model, state)
    written = export_model(model, tmp_path)
    assert tmp_path / "adapter" in written and (tmp_path / "adapter" / "adapter_config.json").exists()
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_dir["bert"], num_labels=3)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    model.eval()
    batch = text_batch("classification")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, model(batch), atol=1e-5)
