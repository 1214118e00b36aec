"""Response quality (:class:`Quality`) in measurable parts: length, informativeness,
relevance, specificity and gibberish (Xiao et al., "Tell Me About Yourself", TOCHI 2020)."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, fields

from communitybots.nlu.relevance import EmbeddingRelevance, TfidfRelevance
from communitybots.nlu.text import (
    _MARKUP,
    _NUMBER,
    _NUMBER_WORDS,
    _STOP,
    _TIME_WORDS,
    _TOKEN,
    words,
)
from communitybots.nlu.vocabulary import Vocabulary
from communitybots.spec import Topic


@dataclass(frozen=True)
class Quality:
    """Quality of one answer; every part and ``overall`` in [0, 1]."""

    length: float
    informativeness: float
    relevance: float
    specificity: float
    gibberish: float
    overall: float

    def to_dict(self) -> dict[str, float]:
        """The parts rounded to 4 places, in field order (``asdict`` without its deep copy:
        every message's event and row take this)."""
        return {name: round(getattr(self, name), 4) for name in _QUALITY_FIELDS}


_QUALITY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Quality))


@dataclass(frozen=True)
class QualityWeights:
    """Weights of the parts in ``overall = (1 - gibberish) * weighted mean(parts)``."""

    length: float = 0.3
    informativeness: float = 0.25
    relevance: float = 0.25
    specificity: float = 0.2


class QualityScorer:
    """Scores an answer against a question and its topic.

    - length: ``log(1 + n) / log(1 + 40)`` for n words, capped at 1 (40 words = full).
    - informativeness: ``1 - exp(-S / 3)``, S the summed rarity of distinct content words
      (Xiao et al. 2020 measure informativeness by word surprisal).
    - relevance: the backend's similarity of the answer to question + topic title +
      keywords.
    - specificity: ``1 - exp(-D / 2)``, D = numbers + names (capitalised words inside a
      sentence) + 0.7 x time expressions + 0.3 x rare content words.
    - gibberish: the largest of the share of word characters in key-mash tokens (and
      stray unknown letters), the
      share of characters inside markup tags (``<script>``) and twice the share of control
      or undecodable characters (binary data); 1 for text without any letter or digit.
    """

    def __init__(self, vocab: Vocabulary, relevance: TfidfRelevance | EmbeddingRelevance,
                 weights: QualityWeights = QualityWeights()):
        self.vocab = vocab
        self.relevance = relevance
        self.weights = weights

    @staticmethod
    def reference(question: str, topic: Topic | None) -> str:
        """The text an answer should be relevant to."""
        if topic is None:
            return question
        return f"{question} {topic.title}. {' '.join(topic.keywords)}"

    def gibberish(self, text: str) -> float:
        tokens = words(text)
        has_digit = any(c.isdigit() for c in text)
        if not tokens:
            return 0.0 if has_digit else 1.0
        total = sum(len(w) for w in tokens)
        bad = sum(len(w) for w in tokens if self.vocab.is_gibberish_word(w)
                  or (len(w) == 1 and w not in self.vocab.known))
        visible = max(1, sum(1 for c in text if not c.isspace()))
        markup = sum(len(m) for m in _MARKUP.findall(text))
        noise = sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c)[0] == "C"
                                                       and not c.isspace()))
        return min(1.0, max(bad / total, markup / visible, 2.0 * noise / visible))

    def score(self, text: str, question: str, topic: Topic | None) -> Quality:
        toks = words(text)
        n_words = len(toks) + len(_NUMBER.findall(text))
        gib = self.gibberish(text)
        if n_words == 0:
            return Quality(0.0, 0.0, 0.0, 0.0, gib, 0.0)
        length = min(1.0, math.log1p(n_words) / math.log1p(40))
        content = {w for w in toks if w not in _STOP and not self.vocab.is_gibberish_word(w)}
        rar = {w: self.vocab.rarity(w) for w in content}
        informativeness = 1.0 - math.exp(-sum(rar.values()) / 3.0)
        relevance = self.relevance.score(text, self.reference(question, topic))
        numbers = len(_NUMBER.findall(text)) + sum(1 for w in toks if w in _NUMBER_WORDS)
        names = 0
        for sentence in re.split(r"[.!?]\s+", unicodedata.normalize("NFKC", text)):
            raw = _TOKEN.findall(sentence)
            names += sum(1 for w in raw[1:] if w[:1].isupper() and w.strip(".,;:!?") != "I")
        times = sum(1 for w in toks if w in _TIME_WORDS)
        rare = sum(1 for v in rar.values() if v >= 0.8)
        detail = numbers + names + 0.7 * times + 0.3 * rare
        specificity = 1.0 - math.exp(-detail / 2.0)
        w = self.weights
        mean = (w.length * length + w.informativeness * informativeness
                + w.relevance * relevance + w.specificity * specificity)
        mean /= w.length + w.informativeness + w.relevance + w.specificity
        overall = (1.0 - gib) * mean
        return Quality(length, informativeness, relevance, specificity, gib, overall)
