"""Text utilities shared by the language-understanding modules: normalisation, words, a
light stem, and the word lists (stop words, number and time words) the measures count."""

from __future__ import annotations

import re
import unicodedata
from importlib import resources

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_DATA = resources.files("communitybots") / "data"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_TOKEN = re.compile(r"\S+")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)?")
_MARKUP = re.compile(r"</?[a-zA-Z][^<>]{0,200}>|&[a-z]+;|\{\{|\}\}")
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "forty fifty hundred thousand half twice once dozen couple".split()
)
_TIME_WORDS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday weekend weekends january "
    "february march april may june july august september october november december spring "
    "summer autumn winter morning mornings evening evenings night nights afternoon daily "
    "weekly monthly hour hours minute minutes week weeks month months year years day days "
    "christmas easter lockdown lockdowns".split()
)
_STOP = frozenset(ENGLISH_STOP_WORDS) | {"i'm", "i've", "i'd", "it's", "don't", "didn't", "yeah",
                                         "ok", "okay", "really", "just", "like", "lot", "lots",
                                         "things", "thing", "stuff", "pretty", "quite", "yes"}


def normalize(text: str) -> str:
    """Lowercase, NFKC-normalised text with typographic apostrophes made plain."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()


def words(text: str) -> list[str]:
    """Lowercase alphabetic words (with inner apostrophes) of a text."""
    return _WORD.findall(normalize(text))


def stem(word: str) -> str:
    """A light suffix-stripping stem ("deliveries" -> "deliver", "commuting" -> "commut")."""
    for suffix in ("ies", "ing", "ion", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word
