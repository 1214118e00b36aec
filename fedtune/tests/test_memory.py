"""Memory accounting: the tracker's arithmetic and one-step measurements on a tiny model."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from typer.testing import CliRunner

from fedtune.measure.cli import bench_app
from fedtune.measure.memory import TensorMemoryTracker, client_share, measure_step, ratios


def test_tracker_counts_storages_once_and_frees():
    tracker = TensorMemoryTracker()
    with tracker:
        a = torch.zeros(1000, 250)  # 1,000,000 bytes
        view = a.t()  # same storage, not counted twice
        b = a + 1
        assert tracker.live == 2_000_000
        del b
        gc.collect()
        assert tracker.live == 1_000_000 and tracker.peak == 2_000_000
        with tracker.phase("grow"):
            c = torch.ones(500, 500)
            a.add_(1)  # in place: no new bytes
            z = torch._efficientzerotensor((1000, 1000))  # holds no memory
        assert tracker.phases["grow"]["peak_above_start"] == 1_000_000
        assert tracker.live == 2_000_000
    del view, c, z


@pytest.fixture(scope="module")
def tiny_bert(tiny_dir):
    return str(tiny_dir["bert"])


def test_forward_gradient_step_uses_less_than_backprop(tiny_bert):
    runs = {m: measure_step(tiny_bert, m, batch=4, seq=32, clients=2) for m in ("backprop", "spry")}
    assert runs["spry"].peak_above_model < runs["backprop"].peak_above_model
    assert runs["spry"].differentiated < runs["backprop"].differentiated == runs["backprop"].trainable
    b = runs["backprop"].breakdown
    assert 2 * b["gradients"] <= b["optimizer_state"] <= 2 * b["gradients"] + 64 and b["tangents"] == 0  # + step counters
    assert runs["spry"].breakdown["tangents"] == runs["spry"].differentiated
    assert all(r.rss_peak and r.loss is not None for r in runs.values())
    fake = [{"method": "inference", "peak_above_model": 10}, {"method": "backprop", "peak_above_model": 40},
            {"method": "spry", "peak_above_model": 20}]
    assert ratios(fake) == {"backprop/inference": 4.0, "spry/backprop": 0.5, "spry/inference": 2.0}


def test_client_share_is_round_robin_plus_head(tiny_bert):
    from fedtune.data.base import DatasetInfo
    from fedtune.models.hf import build_hf_model, head_names, layer_groups

    model = build_hf_model(tiny_bert, DatasetInfo(name="t", task="classification", num_classes=2))
    groups = layer_groups(model, include_head=False)
    shares = [client_share(model, 2, c) for c in range(2)]
    assert sorted(sum((s[: -len(head_names(model))] for s in shares), [])) == sorted(sum(groups, []))


def test_bench_memory_cli_runs_a_subprocess(tiny_bert):
    result = CliRunner().invoke(bench_app, ["memory", "--model", tiny_bert, "--methods", "spry", "--batch", "2",
                                            "--seq", "16", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["results"][0]["method"] == "spry" and out["results"][0]["peak_above_model"] > 0
    bad = CliRunner().invoke(bench_app, ["memory", "--model", tiny_bert, "--methods", "sgd"])
    assert bad.exit_code != 0 and "unknown method" in bad.output
