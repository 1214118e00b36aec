"""Word rarity and gibberish detection: :class:`Vocabulary` (word ranks and a character
bigram model of English) and the key-mash tests."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from communitybots.nlu.text import _DATA, _STOP, words


class Vocabulary:
    """Word ranks from ``data/common_words.txt`` and a character-bigram model of English.

    Rarity of a word of rank r among R known words is ``log(r) / log(4R)`` (Zipf: the
    information ``-log p`` of a word grows with the log of its rank); unknown words get
    rarity 1. The character model is an add-one smoothed bigram model over ``a-z`` and a
    word boundary, trained on the known words and any extra text given; a word is flagged
    as gibberish when its mean bigram log-probability is below the 1st percentile of the
    training words, or when it is a key-mash (no vowel, a character repeated 4 times, a
    short pattern repeated, or 4 neighbouring keys typed in a row as in "qwer").
    """

    def __init__(self, extra_text: Sequence[str] = ()):
        ranks: dict[str, int] = {}
        lines = (_DATA / "common_words.txt").read_text(encoding="utf-8").splitlines()
        for line in lines:
            w = line.strip().lower()
            if w and not w.startswith("#") and w not in ranks:
                ranks[w] = len(ranks) + 1
        self.ranks = ranks
        self._log_max = math.log(4 * len(ranks))
        known = set(ranks) | set(ENGLISH_STOP_WORDS)
        for text in extra_text:
            known.update(words(text))
        self.known = frozenset(known)
        self._train_chars(sorted(self.known))
        #: word -> is_gibberish_word (a pure function of the word): most messages reuse
        #: the same few hundred words; cleared when it grows past _MEMO_WORDS entries
        self._gibberish_memo: dict[str, bool] = {}

    def _train_chars(self, vocab: list[str]) -> None:
        counts = np.ones((27, 27))
        for w in vocab:
            seq = [26] + [ord(c) - 97 for c in w if "a" <= c <= "z"] + [26]
            for a, b in zip(seq, seq[1:], strict=False):
                counts[a, b] += 1.0
        self._logp = np.log(counts / counts.sum(axis=1, keepdims=True))
        scores = np.array([self.char_score(w) for w in vocab if len(w) >= 3])
        self.char_threshold = float(np.quantile(scores, 0.01))

    def char_score(self, word: str) -> float:
        """Mean log-probability of the character bigrams of a word (boundaries included)."""
        seq = [26] + [ord(c) - 97 for c in word if "a" <= c <= "z"] + [26]
        return float(np.mean([self._logp[a, b] for a, b in zip(seq, seq[1:], strict=False)]))

    def rarity(self, word: str) -> float:
        """Rarity in [0, 1]: 0 for stop words, ``log(rank)/log(4R)`` for known words, 1 else."""
        if word in _STOP:
            return 0.0
        r = self.ranks.get(word)
        return 1.0 if r is None else min(1.0, math.log(r) / self._log_max)

    def is_gibberish_word(self, word: str) -> bool:
        """Whether an alphabetic token looks like key-mashing rather than a word."""
        found = self._gibberish_memo.get(word)
        if found is None:
            if len(self._gibberish_memo) >= _MEMO_WORDS:
                self._gibberish_memo.clear()
            found = self._gibberish_memo[word] = self._is_gibberish_word(word)
        return found

    def _is_gibberish_word(self, word: str) -> bool:
        w = word.replace("'", "")
        if _REPEATED_CHAR.search(w) or _REPEATED_SHORT.fullmatch(w):
            return True
        if w in self.known:
            return False
        if len(w) <= 2:
            return len(w) == 2  # an unknown two-letter token ("xq") is noise; letters pass
        if _LAUGH.fullmatch(w):
            return False
        if len(w) >= 6 and _REPEATED_PATTERN.fullmatch(w):
            return True
        if len(w) >= 4 and not _VOWEL.search(w):
            return True
        if _keyboard_run(w) >= 4:
            return True
        return self.char_score(w) < self.char_threshold


_LAUGH = re.compile(r"(?:ha|he|hi|ah|lo)+[hl]?")
_REPEATED_CHAR = re.compile(r"(.)\1{3,}")
_REPEATED_SHORT = re.compile(r"(.{1,3})\1{2,}")
_REPEATED_PATTERN = re.compile(r"(.{2,4})\1+")
_VOWEL = re.compile(r"[aeiouy]")
_MEMO_WORDS = 50_000
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEYPOS = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}


def _keyboard_run(word: str) -> int:
    """Length of the longest run of neighbouring keys typed in one direction ("qwer")."""
    best = run = 1
    step = 0
    for a, b in zip(word, word[1:], strict=False):
        pa, pb = _KEYPOS.get(a), _KEYPOS.get(b)
        d = pb[1] - pa[1] if pa and pb and pa[0] == pb[0] else 0
        if d in (1, -1) and (run == 1 or d == step):
            run += 1
        elif d in (1, -1):
            run = 2
        else:
            run = 1
        step = d
        best = max(best, run)
    return best
