"""The Shakespeare text tasks of the Spry experiments: play classification and next-token LM."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

from fedtune.config import ConfigError, DataConfig
from fedtune.data import DATASETS, load_federated, load_raw
from fedtune.data.shakespeare import parse_speeches
from fedtune.data.text import token_sequences

PLAY = {"num_plays": 4, "max_per_play": 120, "max_length": 32}
LM = {"tokenizer": "minilm", "max_length": 16, "max_roles": 12, "max_sequences_per_role": 8}


def test_both_datasets_are_registered():
    assert "shakespeare_play" in DATASETS and "shakespeare_lm" in DATASETS


def test_play_classification_has_real_labels():
    raw = load_raw("shakespeare_play", PLAY, seed=0)
    ex = raw.examples
    assert raw.info.task == "classification" and raw.info.num_classes == 4
    assert raw.info.tokenizer is not None and raw.groups is None
    assert ex.tensors["input_ids"].shape == (len(ex), 32) and ex.tensors["attention_mask"].shape == (len(ex), 32)
    assert torch.bincount(ex.labels).tolist() == [120] * 4
    # a speech decodes back to text of its play
    tok = raw.info.tokenizer
    plays = raw.info.class_names
    speeches = {s.text.lower()[:20] for s in parse_speeches() if s.play == plays[int(ex.labels[0])]}
    decoded = tok.decode(ex.tensors["input_ids"][0], skip_special_tokens=True)
    assert any(decoded[:12] in s or s[:12] in decoded for s in speeches)


def test_play_options_are_checked():
    with pytest.raises(ConfigError, match="data.options.colour"):
        load_raw("shakespeare_play", {"colour": 1})
    with pytest.raises(ConfigError, match="data.options.plays"):
        load_raw("shakespeare_play", {"plays": ["hamlet", "no_such_play"]})


def test_play_dirichlet_partition_skews_labels():
    cfg = DataConfig(name="shakespeare_play", num_clients=10, partition="dirichlet", alpha=0.1, options=PLAY)
    fed = load_federated(cfg, seed=1)
    assert fed.num_clients == 10
    total = sum(len(c.train) + len(c.val) + len(c.test) for c in fed.clients)
    assert total == 480
    dominant = [torch.bincount(c.train.labels, minlength=4).max() / len(c.train) for c in fed.clients]
    assert float(np.mean(dominant)) > 0.6  # α = 0.1: most clients hold mostly one play


def test_token_sequences_align_labels_with_next_token():
    inputs, mask, labels = token_sequences(list(range(10, 20)), 4, pad_id=0)
    assert inputs.tolist() == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 0, 0, 0]]
    assert labels.tolist() == [[11, 12, 13, 14], [15, 16, 17, 18], [19, -100, -100, -100]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert token_sequences([5], 4, pad_id=0)[0].shape == (0, 4)


def test_lm_has_one_natural_group_per_role():
    raw = load_raw("shakespeare_lm", LM, seed=0)
    ex = raw.examples
    assert raw.info.task == "causal_lm" and raw.info.num_classes == len(raw.info.tokenizer)
    assert len(set(raw.groups.tolist())) == 12 == len(raw.info.extra["roles"])
    assert np.bincount(raw.groups).max() <= 8
    ids, mask, labels = ex.tensors["input_ids"], ex.tensors["attention_mask"], ex.labels
    assert torch.equal(labels[:, :-1][mask[:, 1:] == 1], ids[:, 1:][mask[:, 1:] == 1])
    assert bool((labels[mask == 0] == -100).all())
    fed = load_federated(DataConfig(name="shakespeare_lm", partition="natural", options=LM), seed=0)
    assert fed.num_clients == 12


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "and", "i", "to", "of", "my", "you", "a", "is", "that", "in", "not"]


def _model_with_its_own_tokenizer(tiny_dir, folder):
    """The tiny BERT plus a 16-word lowercase word-level tokenizer saved beside it."""
    import shutil

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(tiny_dir["bert"], folder)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_text_datasets_take_an_hf_models_own_tokenizer(tiny_dir, tmp_path):
    from fedtune.config import load_experiment
    from fedtune.engine import run_experiment

    model = _model_with_its_own_tokenizer(tiny_dir, tmp_path / "bert-with-tokenizer")
    for name in ("shakespeare_play", "shakespeare_lm", "mr"):  # every registered dataset with a tokenizer option
        exp = load_experiment(raw={"data": {"name": name}, "model": {"name": f"hf:{model}"}})
        assert exp.data.options["tokenizer"] == str(model), name
    named = load_experiment(raw={"data": {"name": "shakespeare_play", "options": {"tokenizer": "minilm"}},
                                 "model": {"name": f"hf:{model}"}})
    assert named.data.options["tokenizer"] == "minilm"  # one named stays
    plain = load_experiment(raw={"data": {"name": "shakespeare_play"}, "model": {"name": "mlp"}})
    assert "tokenizer" not in plain.data.options and plain.resolved()["data"]["options"]["tokenizer"] == "minilm"
    assert "tokenizer" not in load_experiment(raw={"data": {"name": "shakespeare"}, "model": {"name": f"hf:{model}"}}).data.options

    exp = load_experiment(raw={
        "rounds": 1, "clients_per_round": 2, "output": str(tmp_path / "run"), "device": "cpu",
        "data": {"name": "shakespeare_play", "num_clients": 2, "options": {**PLAY, "num_plays": 2, "max_per_play": 20,
                                                                            "max_length": 12}},
        "model": {"name": f"hf:{model}"}, "algorithm": {"name": "fedavg", "batch_size": 8},
        "checkpoint": {"every": 0}})
    raw = load_raw(exp.data.name, exp.data.options)
    ids = raw.examples.tensors["input_ids"]
    assert len(raw.info.tokenizer) == len(WORDS) and int(ids.max()) < len(WORDS)  # the model's 16 words, not minilm's 30522
    assert (ids == WORDS.index("the")).any() and (ids == WORDS.index("[UNK]")).any()
    result = run_experiment(exp, report=False)
    assert [m["round"] for m in result.metrics] == [1] and result.metrics[0]["test_accuracy"] >= 0
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert saved["data"]["options"]["tokenizer"] == str(model)  # recorded, so the config.toml reruns with it
