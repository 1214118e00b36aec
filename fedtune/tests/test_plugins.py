"""Plugins: the worked example of docs/plugins.md, experiment/--plugin/entry-point loading,
and one-line errors for plugins that cannot be imported."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedtune import plugins
from fedtune.cli import app
from fedtune.config import ConfigError, load_experiment
from fedtune.server import SERVER_OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
GUIDE = ROOT / "docs" / "plugins.md"
runner = CliRunner()


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_guide_shows_the_example_files_verbatim():
    guide = GUIDE.read_text()
    assert (EXAMPLE / "myfl.py").read_text() in _blocks(guide, "python")
    tomls = _blocks(guide, "toml")
    assert (EXAMPLE / "myfl.toml").read_text() in tomls
    assert (EXAMPLE / "pyproject.toml").read_text() in tomls
    entry = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry[plugins.ENTRY_POINT_GROUP] == {"myfl": "myfl"}


@pytest.fixture
def myfl():
    (module,) = plugins.load_plugins(["myfl.py"], EXAMPLE)
    return module


def test_fedavgm_step_by_hand(myfl):
    opt = SERVER_OPTIMIZERS.get("myfl-avgm")(lr=0.5, beta=0.9)
    x = {"w": torch.tensor([1.0, 2.0])}
    x1 = opt.step(x, {"w": torch.tensor([0.2, -0.4])})  # v = Δ1
    assert torch.allclose(x1["w"], torch.tensor([1.1, 1.8]))
    x2 = opt.step(x1, {"w": torch.tensor([0.1, 0.0])})  # v = 0.9 Δ1 + Δ2 = (0.28, -0.36)
    assert torch.allclose(x2["w"], torch.tensor([1.24, 1.62]))
    assert opt.round_metrics()["momentum_norm"] == pytest.approx((0.28**2 + 0.36**2) ** 0.5, rel=1e-6)
    again = SERVER_OPTIMIZERS.get("myfl-avgm")(lr=0.5, beta=0.9)
    again.load_state_dict(opt.state_dict())
    assert torch.allclose(again.step(x2, {"w": torch.zeros(2)})["w"], opt.step(x2, {"w": torch.zeros(2)})["w"])


def test_the_guides_experiment_runs_and_resumes_from_elsewhere(tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(EXAMPLE / "myfl.toml"), "--set", "rounds=3", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["plugins"] == [str(EXAMPLE / "myfl.py")]  # found beside the experiment, recorded by path
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"momentum_norm"' in lines[-1]
    scales = [float(v) for v in re.findall(r'"\d+": ([0-9.]+)', lines[-1].split('"client_clip_scale": {')[1].split("}")[0])]
    assert scales and all(0 < s < 1 for s in scales)  # clip = 0.1 binds on every client
    monkeypatch.chdir(tmp_path)
    more = runner.invoke(app, ["run", "--resume", str(out), "--set", "rounds=4", "--quiet"])
    assert more.exit_code == 0, more.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


def test_plugin_option_adds_to_the_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)
    exp = load_experiment(ROOT / "examples" / "demo_fedavg.toml", ['server.name="myfl-avgm"'], plugins=["plugin/myfl.py"])
    assert exp.server.name == "myfl-avgm" and exp.plugins == [str(EXAMPLE / "myfl.py")]
    with pytest.raises(ConfigError, match=r"^server.beta: "):
        load_experiment(ROOT / "examples" / "demo_fedavg.toml", ['server.name="myfl-avgm"', "server.beta=1.5"], plugins=["plugin/myfl.py"])


def test_entry_point_plugin_is_found_without_configuration(tmp_path, monkeypatch):
    (tmp_path / "ep_plugin_mod.py").write_text(
        "from fedtune.server import SERVER_OPTIMIZERS, FedAvgOptimizer\n"
        "def register():\n"
        "    SERVER_OPTIMIZERS.register('ep-test-avg')(type('EpAvg', (FedAvgOptimizer,), {}))\n"
    )
    dist = tmp_path / "ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nep = ep_plugin_mod:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset_entry_points()
    try:
        exp = load_experiment(ROOT / "examples" / "demo_fedavg.toml", ['server.name="ep-test-avg"'])
        assert exp.server.name == "ep-test-avg"
        assert "ep-test-avg" in SERVER_OPTIMIZERS.names()
    finally:
        plugins.reset_entry_points()
        sys.modules.pop("ep_plugin_mod", None)


def test_broken_entry_point_is_one_line(tmp_path, monkeypatch):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset_entry_points()
    try:
        with pytest.raises(ConfigError, match="entry point broken = 'no_such_module_xyz' \\(package broken\\) failed"):
            SERVER_OPTIMIZERS.get("not-registered-anywhere")
    finally:
        plugins.reset_entry_points()


@pytest.mark.parametrize(
    "plugin, message",
    [
        ("no_such_plugin_mod", "plugins: no module named 'no_such_plugin_mod'"),
        ("missing.py", "plugins: .*missing.py: no such file"),
        ("raises.py", "plugins: .*raises.py failed on import: RuntimeError: boom"),
    ],
)
def test_bad_plugin_is_one_line_exit_2_and_writes_nothing(tmp_path, plugin, message):
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    exp = tmp_path / "exp.toml"
    exp.write_text(f'plugins = ["{plugin}"]\nrounds = 1\n[data]\nname = "digits"\nnum_clients = 10\n[model]\nname = "logreg"\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(exp), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.match(f"error: {message}", lines[0]), result.output
    assert not out.exists()
