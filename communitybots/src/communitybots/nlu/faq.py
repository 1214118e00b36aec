"""Answers to questions about the bot and the survey: the FAQ matched by TF-IDF cosine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer

from communitybots.nlu.text import _DATA, normalize
from communitybots.nlu.tfidf import SparseTfidf
from communitybots.spec import FAQItem


def default_faq() -> list[FAQItem]:
    """The built-in answers to questions about the bot and the survey (``data/faq.yaml``)."""
    raw = yaml.safe_load((_DATA / "faq.yaml").read_text(encoding="utf-8"))
    return [FAQItem.model_validate(item) for item in raw]


class FAQMatcher:
    """Picks the FAQ answer whose examples are most similar (TF-IDF cosine) to a question."""

    def __init__(self, items: Sequence[FAQItem], min_similarity: float = 0.2):
        self.items = list(items)
        self.min_similarity = min_similarity
        self._owner = [i for i, item in enumerate(self.items) for _ in item.examples]
        examples = [normalize(e) for item in self.items for e in item.examples]
        self._vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        self._x = self._vec.fit_transform(examples)
        self._tfidf = SparseTfidf(self._vec)

    def match(self, text: str) -> tuple[FAQItem | None, float]:
        sims = (self._tfidf.row(normalize(text)) @ self._x.T).toarray()[0]
        k = int(np.argmax(sims))
        if sims[k] < self.min_similarity:
            return None, float(sims[k])
        return self.items[self._owner[k]], float(sims[k])
