"""The NLU's one-text TF-IDF and intent probabilities (issue 19) are bit-for-bit those of
scikit-learn's ``transform`` and ``predict_proba``, so the decisions cannot change."""

from pathlib import Path

import numpy as np
import pytest

from communitybots import nlu as nlu_mod
from communitybots.nlu import NLU, SparseTfidf, load_seeds, normalize, words
from communitybots.spec import load_survey

ROOT = Path(__file__).parents[1]
SURVEY = ROOT / "src/communitybots/surveys/covid_daily_life.yaml"
EVAL = Path(__file__).parent / "data/intent_eval.tsv"


@pytest.fixture(scope="module")
def nlu():
    return NLU(load_survey(SURVEY), relevance="tfidf")


def _texts() -> list[str]:
    texts = [normalize(t).strip() for _, t, _ in load_seeds(EVAL)]
    return texts + ["", "zzqx", "<b>tags</b> &amp; 12:30", "naïve café ünïcode"]


def test_one_text_tfidf_equals_transform(nlu) -> None:
    union = nlu.intents.model.steps[0][1]
    vectorizers = [v for _, v in union.transformer_list] + [nlu.relevance._vec, nlu.faq._vec]
    for vectorizer in vectorizers:
        fast = SparseTfidf(vectorizer)
        for text in _texts():
            want = vectorizer.transform([text])
            indices, values = fast.vector(text)
            assert indices.tolist() == want.indices.tolist(), text
            assert values.tobytes() == want.data.tobytes(), text  # bit for bit


def test_intent_probabilities_equal_predict_proba(nlu) -> None:
    model = nlu.intents.model
    for text in _texts():
        if text:
            assert nlu.intents._proba(text).tobytes() == model.predict_proba([text])[0].tobytes()


def test_relevance_equals_the_sparse_product(nlu) -> None:
    vec = nlu.relevance._vec
    reference = "How did your daily routine change? Daily life. routine, work, home"
    for text in _texts():
        content = " ".join(w for w in words(text) if w not in nlu_mod._STOP)
        if not content:
            continue
        cos = float((vec.transform([content]) @ vec.transform([normalize(reference)]).T)
                    .toarray()[0, 0])
        assert nlu.relevance.score(content, reference) == max(0.0, min(1.0, cos / 0.3))


def test_a_binary_or_unnormalised_vectorizer_is_refused() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    with pytest.raises(ValueError, match="SparseTfidf needs"):
        SparseTfidf(TfidfVectorizer(norm="l1").fit(["apple pear"]))
    assert np.isfinite(SparseTfidf(TfidfVectorizer().fit(["apple pear", "pear fig"])).vector("apple")[1]).all()
