"""Resume in a fresh process, extending a run, and checkpoints that cannot run code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import torch

from fedtune.config import ConfigError
from fedtune.engine import resume_experiment, run_experiment
from fedtune.engine.checkpoint import latest_checkpoint

RAW = {
    "name": "resume",
    "seed": 5,
    "rounds": 4,
    "clients_per_round": 3,
    "data": {"name": "digits", "num_clients": 6, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "algorithm": {"name": "fedavg", "local_epochs": 1, "batch_size": 16, "lr": 0.3},
    "server": {"name": "fedyogi", "lr": 0.03},
    "eval": {"every": 3},
    "checkpoint": {"every": 1},
}


def fedtune(*args: str) -> subprocess.CompletedProcess:
    code = "import sys, torch; torch.set_num_threads(1); from fedtune.cli import app; sys.argv = ['fedtune', *sys.argv[1:]]; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in rows]


def test_run_extended_in_a_fresh_process_equals_a_straight_run(tmp_path):
    straight = run_experiment(RAW_experiment(tmp_path / "straight"), report=False)
    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps({**RAW, "rounds": 2, "output": str(tmp_path / "extended")}))
    assert fedtune("run", str(path), "--quiet").returncode == 0
    assert "test_accuracy" in metrics(tmp_path / "extended")[-1]  # a run always evaluates its last round
    done = fedtune("run", "--resume", str(tmp_path / "extended"), "--set", "rounds=4", "--quiet")
    assert done.returncode == 0, done.stderr
    assert metrics(tmp_path / "extended") == [{k: v for k, v in m.items() if not k.endswith("_s")} for m in straight.metrics]


def RAW_experiment(output: Path):
    from fedtune.config import load_experiment

    return load_experiment(raw={**RAW, "output": str(output)})


@pytest.mark.parametrize(
    ("setting", "message"),
    [("data.alpha=1.0", "only --set rounds=N"), ("rounds=1", "at least the run's 2 rounds"), ("rounds='x'", "at least")],
)
def test_resume_refuses_settings_it_cannot_apply(tmp_path, setting, message):
    run_experiment(RAW_experiment(tmp_path / "run").model_copy(update={"rounds": 2}), report=False)
    with pytest.raises(ConfigError, match=message):
        resume_experiment(tmp_path / "run", overrides=[setting])


def test_resume_refuses_the_options_a_run_folder_fixes(tmp_path):
    result = fedtune("run", "fedtune.toml", "--resume", str(tmp_path))
    assert result.returncode == 2 and "--resume continues a run folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class Payload:
    """Anything that is not a tensor or plain data: unpickling it could run code."""

    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def test_checkpoint_with_code_is_refused(tmp_path):
    run_experiment(RAW_experiment(tmp_path / "run").model_copy(update={"rounds": 2}), report=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = torch.load(ckpt, weights_only=True)
    state["server"]["extra"] = Payload()
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="refused, since loading them could run code"):
        resume_experiment(tmp_path / "run")
