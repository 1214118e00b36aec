"""Experiment tracking: TensorBoard event files and MLflow runs carry the config and every
round's metrics; asking for a package that is not installed is one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedtune.cli import app
from fedtune.engine import run_experiment
from fedtune.errors import ConfigError
from fedtune.report.tracking import flat_params, round_scalars, tracking_uri


def test_round_scalars_keep_numbers_and_count_failures():
    record = {"round": 3, "train_loss": 0.5, "bytes_up": 10, "sampled": [1, 2], "client_steps": {"1": 4}, "failures": [{"client": 2}]}
    assert round_scalars(record) == {"train_loss": 0.5, "bytes_up": 10.0, "failures": 1.0}


def test_params_are_the_flattened_config(make_experiment):
    params = flat_params(make_experiment())
    assert params["algorithm.name"] == "fedavg" and params["data.num_clients"] == "8" and params["model.options.hidden"] == "[32]"


def test_a_plain_path_is_a_file_uri(tmp_path):
    assert tracking_uri(str(tmp_path / "ml")) == (tmp_path / "ml").as_uri()
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_tensorboard_gets_every_round(make_experiment, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_experiment(make_experiment(rounds=3, **{"log.tensorboard": True}), report=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]
    assert [round(e.value, 5) for e in events.Scalars("train_loss")] == [round(m["train_loss"], 5) for m in result.metrics]
    assert [e.step for e in events.Scalars("test_accuracy")] == [2, 3]  # eval every 2, and after the last round
    assert "config" in "".join(events.Tags()["tensors"])


def test_mlflow_gets_the_config_and_every_round(make_experiment, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    store = tmp_path / "mlruns"
    result = run_experiment(make_experiment(rounds=3, **{"log.mlflow": str(store)}), report=False)
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("small").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.lr"] == "0.3" and run.data.params["server.name"] == "fedavg"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(h.step, h.value) for h in history] == [(m["round"], m["train_loss"]) for m in result.metrics]


@pytest.mark.parametrize(("field", "value", "module"), [("tensorboard", "true", "tensorboard"), ("mlflow", '"runs/ml"', "mlflow")])
def test_a_missing_package_is_one_line_before_anything_is_written(tmp_path, monkeypatch, field, value, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    exp = tmp_path / "exp.toml"
    exp.write_text(f'name = "t"\nrounds = 1\nclients_per_round = 2\noutput = "{tmp_path / "run"}"\n[data]\nname = "digits"\nnum_clients = 4\n[log]\n{field} = {value}\n')
    result = CliRunner().invoke(app, ["run", str(exp)])
    assert result.exit_code == 2, result.output
    assert f'log.{field}: needs the {module} package; install it with pip install "fedtune[tracking]"' in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_an_empty_mlflow_uri_is_refused(make_experiment):
    with pytest.raises(ConfigError, match="log.mlflow"):
        make_experiment(**{"log.mlflow": ""})

