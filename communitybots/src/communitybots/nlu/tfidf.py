"""TF-IDF of one message, without scikit-learn's per-call overhead (:class:`SparseTfidf`)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer


class SparseTfidf:
    """The ``transform`` of a fitted ``TfidfVectorizer`` for one text, as (sorted feature
    indices, values).

    scikit-learn's ``transform`` validates its input, builds the analyzer and a sparse
    matrix on every call: about 1 ms for one short message, several times the arithmetic.
    This keeps the vectorizer's own analyzer, vocabulary and idf and repeats its steps in
    its order of operations (counts -> ``log(tf) + 1`` when sublinear -> times idf -> each
    value divided by the L2 norm summed in index order), so the values are bit-for-bit
    those of ``TfidfVectorizer.transform`` (Salton & Buckley 1988 weighting, as there).
    """

    def __init__(self, vectorizer: TfidfVectorizer):
        if vectorizer.norm != "l2" or not vectorizer.use_idf or vectorizer.binary:
            raise ValueError("SparseTfidf needs an l2-normalised, idf-weighted, non-binary "
                             "TfidfVectorizer")
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._idf: np.ndarray = vectorizer.idf_
        self._sublinear = bool(vectorizer.sublinear_tf)
        self.n_features = len(self._vocabulary)

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of the text's TF-IDF row; both empty when no feature is known."""
        counts: dict[int, int] = {}
        vocabulary = self._vocabulary
        for feature in self._analyze(text):
            j = vocabulary.get(feature)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        order = sorted(counts)
        indices = np.array(order, dtype=np.int32)
        values = np.array([counts[j] for j in order], dtype=np.float64)
        if self._sublinear:
            np.log(values, values)
            values += 1.0
        values *= self._idf[indices]
        total = 0.0
        for v in values.tolist():  # sequential, as scikit-learn's row normalisation
            total += v * v
        if total != 0.0:
            values /= math.sqrt(total)
        return indices, values

    def mapping(self, text: str) -> dict[int, float]:
        """The row as {feature index: value} (for dot products with another row)."""
        indices, values = self.vector(text)
        return dict(zip(indices.tolist(), values.tolist(), strict=True))

    def dot(self, text: str, other: dict[int, float]) -> float:
        """The dot product of the text's row with ``other`` (a :meth:`mapping`), summed in
        the text's index order as scipy's sparse product does."""
        indices, values = self.vector(text)
        total = 0.0
        for j, v in zip(indices.tolist(), values.tolist(), strict=True):
            w = other.get(j)
            if w is not None:
                total += v * w
        return total

    def row(self, text: str) -> sp.csr_array:
        """The row as a 1 x n_features CSR array (the type ``transform`` returns)."""
        indices, values = self.vector(text)
        return sp.csr_array((values, indices, np.array([0, len(indices)], dtype=np.int32)),
                            shape=(1, self.n_features))
