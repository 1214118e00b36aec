"""Sensitive disclosures (a death, illness, job loss, mental-health crisis or violence),
found by word patterns, offline."""

from __future__ import annotations

import re

from communitybots.nlu.text import normalize

#: sensitive disclosures, by category: patterns over the normalised text (offline, no
#: model); the CTM answers them with care instead of a probe
SENSITIVE: dict[str, re.Pattern[str]] = {
    "bereavement": re.compile(
        r"\b(died|dying|passed away|passed on|death of|funeral|lost (my|our|her|his) "
        r"(mother|mom|mum|father|dad|parents?|grand\w+|husband|wife|partner|son|daughter|"
        r"child|baby|brother|sister|friend|uncle|aunt)|killed|bereave\w*|widow\w*)\b"),
    "illness": re.compile(
        r"\b(cancer|chemo\w*|intensive care|icu|ventilator|hospitali[sz]ed|in (the )?hospital|"
        r"long covid|seriously ill|very (sick|ill)|diagnosed|stroke|heart attack)\b"),
    "job_loss": re.compile(
        r"\b(lost (my|our|his|her) (job|work|income|business)|laid off|made redundant|"
        r"redundancy|got fired|was fired|unemployed|out of work|furlough\w*|"
        r"(business|shop|restaurant) (closed|went under|went bankrupt)|bankrupt\w*)\b"),
    "mental_health": re.compile(
        r"\b(depress\w*|suicid\w*|panic attacks?|anxiety|self[- ]harm|breakdown|"
        r"so lonely|very lonely|isolated and alone)\b"),
    "violence": re.compile(
        r"\b(domestic (violence|abuse)|(he|she|they) (hit|beat) me|abusive (partner|husband|"
        r"wife|relationship)|assaulted)\b"),
}


def sensitive_disclosure(text: str) -> str | None:
    """The category of a sensitive disclosure in ``text`` (a death, illness, job loss,
    mental-health crisis or violence), or None; the first matching category wins."""
    normal = normalize(text)
    for category, pattern in SENSITIVE.items():
        if pattern.search(normal):
            return category
    return None
