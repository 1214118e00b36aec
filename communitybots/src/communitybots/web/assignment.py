"""Assignment of a consenting participant to a condition: balanced (block) randomization.

Participants whose condition is drawn are assigned in blocks of ``BLOCK_SIZE`` (two of
each condition, in random order), counted per survey version: after every complete block
each condition has the same number of drawn participants, and within a block neither
leads by more than two, whatever the order people arrive in. A participant whose link
names the condition (``/?condition=single``) is assigned as asked, marked ``"link"``,
and does not count towards the blocks; the dashboard leaves such participants out of the
comparison unless the researcher includes them.

The draw reads the counts already stored: two consents that arrive at the same instant
(in different server threads) may both take the last place of a condition in a block.
The draw weights each condition by the places it still has in the current block (never
below zero), so such an overshoot is evened out by the following draws.
"""

from __future__ import annotations

import random

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from communitybots.store import Participant

from .conversation import choose_condition
from .settings import CONDITIONS

#: participants per block: two of each condition
BLOCK_SIZE = 2 * len(CONDITIONS)


def draw(counts: dict[str, int], rng: random.Random) -> str:
    """The condition of the next drawn participant, given how many of the drawn
    participants so far each condition has: each condition is weighted by its free
    places in the current block (the block every condition has reached; its share is
    ``BLOCK_SIZE / len(CONDITIONS)``)."""
    share = BLOCK_SIZE // len(CONDITIONS)
    total = sum(counts.get(c, 0) for c in CONDITIONS)
    block_end = (total // BLOCK_SIZE + 1) * share
    free = [max(0, block_end - counts.get(c, 0)) for c in CONDITIONS]
    if not any(free):  # only after a race overfilled every condition: the fewest first
        fewest = min(counts.get(c, 0) for c in CONDITIONS)
        free = [1 if counts.get(c, 0) == fewest else 0 for c in CONDITIONS]
    return rng.choices(CONDITIONS, weights=free)[0]


def assign(db: Session, survey_pk: int, requested: str | None,
           rng: random.Random | None = None) -> tuple[str, str]:
    """(condition, how it was assigned): ``("single", "link")`` when the link names it,
    else the next place of the block randomization of survey version ``survey_pk``."""
    if requested:  # an unknown name is refused with a one-line 400 (``TurnError``)
        return choose_condition(requested)
    counts = dict(db.execute(
        select(Participant.condition, func.count(Participant.id))
        .where(Participant.survey_pk == survey_pk, Participant.assignment == "random")
        .group_by(Participant.condition)).all())
    return draw(counts, rng or random.SystemRandom()), "random"
