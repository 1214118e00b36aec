"""Balanced (block) randomization of the conditions: the draw by itself, and over HTTP
(participants whose link names the condition do not count towards the blocks)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select
from web_support import consent, database_url, make_client  # noqa: F401  (fixtures)

from communitybots.store import Participant
from communitybots.web.assignment import BLOCK_SIZE, draw
from communitybots.web.settings import CONDITIONS


@pytest.mark.parametrize("seed", range(20))
def test_every_block_is_balanced(seed: int) -> None:
    rng = random.Random(seed)
    counts = dict.fromkeys(CONDITIONS, 0)
    orders = set()
    for block in range(10):
        order = []
        for _ in range(BLOCK_SIZE):
            condition = draw(counts, rng)
            counts[condition] += 1
            order.append(condition)
            assert max(counts.values()) - min(counts.values()) <= BLOCK_SIZE // 2
        orders.add(tuple(order))
        assert counts == dict.fromkeys(CONDITIONS, (block + 1) * BLOCK_SIZE // 2)
    assert len(orders) > 1  # the order within a block is random


def test_an_overfilled_block_is_evened_out() -> None:
    # a race gave "multi" three of the first four places: the next draws favour "single"
    rng = random.Random(0)
    counts = {"multi": 3, "single": 1}
    for _ in range(4):
        counts[draw(counts, rng)] += 1
    assert counts == {"multi": 4, "single": 4}
    assert draw({"multi": 5, "single": 3}, rng) == "single"  # every place taken: fewest first


def test_consents_are_balanced_and_link_participants_do_not_count(make_client) -> None:  # noqa: F811
    # two blocks drawn (a fair coin per person would give 4 and 4 only 27 % of the time)
    clients = [make_client(consents_per_address=0) for _ in range(2 * BLOCK_SIZE + 2)]
    consent(clients[0], "multi")  # by link: not part of the randomization
    consent(clients[1], "multi")
    for client in clients[2:]:
        consent(client)
    with clients[0].app.state.sessions() as db:
        drawn = db.scalars(select(Participant.condition)
                           .where(Participant.assignment == "random")).all()
        by_link = db.scalars(select(Participant.condition)
                             .where(Participant.assignment == "link")).all()
    assert sorted(drawn) == sorted(list(CONDITIONS) * BLOCK_SIZE)
    assert by_link == ["multi", "multi"]
