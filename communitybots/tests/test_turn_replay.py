"""Idempotent replay of any earlier turn, not only the most recent one, and per participant.

A retried request (a lost response, a double click, a page reloaded while sending) may
carry the idempotency key of a message that is no longer the latest: the participant
sent more since. The retry must get back the replies of *that* message's turn, nothing
must be stored again, and one participant's key never reaches another's record.
"""

from __future__ import annotations

from sqlalchemy import func, select
from web_support import RICH, consent, send

from communitybots.store import EventRow, Message, Participant
from communitybots.web import conversation


def _db(client):
    return client.app.state.sessions()


def _rows(client) -> tuple[int, int]:
    with _db(client) as db:
        return (db.scalar(select(func.count(Message.id))),
                db.scalar(select(func.count(EventRow.id))))


def test_a_retried_older_message_gets_its_own_turns_replies(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    # three turns whose replies differ: a rich answer, a skip (ack + next topic), a question
    sent = {
        "t1": send(client, RICH["dwelling"], client_id="t1"),
        "t2": send(client, "skip", client_id="t2"),
        "t3": send(client, "I don't know", client_id="t3"),
    }
    texts = {k: [r["text"] for r in v["replies"]] for k, v in sent.items()}
    assert texts["t1"] != texts["t2"] != texts["t3"] and texts["t1"] != texts["t3"]
    rows = _rows(client)
    latest_cues = sent["t3"]["cues"]
    for key in ("t1", "t2", "t3", "t1"):
        again = send(client, "whatever the retry carries", client_id=key)
        assert again["replayed"] is True
        assert again["replies"] == sent[key]["replies"], key
        # the cues show where the conversation is now, whatever turn was replayed
        assert again["cues"] == latest_cues
    assert _rows(client) == rows  # nothing stored twice
    with _db(client) as db:
        own = db.scalars(select(Message.text).where(Message.role == "participant")
                         .order_by(Message.seq)).all()
    assert own == [RICH["dwelling"], "skip", "I don't know"]


def test_replayed_replies_are_the_stored_rows_in_order(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    send(client, RICH["dwelling"], client_id="a")
    send(client, "skip", client_id="b")  # a later turn, so "a" is no longer the latest
    again = send(client, "x", client_id="a")
    with _db(client) as db:
        own = db.scalar(select(Message).where(Message.client_id == "a"))
        bots = db.scalars(select(Message).where(Message.turn == own.turn, Message.role == "bot")
                          .order_by(Message.seq)).all()
    assert [r["seq"] for r in again["replies"]] == [m.seq for m in bots]
    assert [r["text"] for r in again["replies"]] == [m.text for m in bots]
    assert all(r["role"] == "bot" for r in again["replies"])
    assert [r["seq"] for r in again["replies"]] == sorted(r["seq"] for r in again["replies"])


def test_idempotency_keys_belong_to_one_participant(make_client) -> None:
    alice, bob = make_client(), make_client()
    consent(alice, "multi")
    consent(bob, "multi")
    first = send(alice, RICH["dwelling"], client_id="k1")
    # Bob's browser happens to make the same key: his message is a new turn of his own
    other = send(bob, "skip", client_id="k1")
    assert other["replayed"] is False
    assert other["replies"] != first["replies"]
    assert other["cues"]["topic_id"] == "family"
    again = send(alice, "retry", client_id="k1")
    assert again["replayed"] and again["replies"] == first["replies"]
    assert again["cues"]["topic_id"] == first["cues"]["topic_id"]
    with _db(alice) as db:
        per_participant = dict(db.execute(
            select(Participant.public_id, func.count(Message.id))
            .join(Message, Message.participant_id == Participant.id)
            .where(Message.role == "participant").group_by(Participant.public_id)).all())
        assert sorted(per_participant.values()) == [1, 1]
        assert conversation.count_messages(db) == 2


def test_replay_of_a_turn_number_shared_by_two_participants(make_client) -> None:
    # both participants have a turn 1; the replay must read only the caller's turn 1
    alice, bob = make_client(), make_client()
    consent(alice, "multi")
    consent(bob, "multi")
    mine = send(alice, "skip", client_id="a1")
    send(bob, RICH["dwelling"], client_id="b1")
    again = send(alice, "retry", client_id="a1")
    assert again["replies"] == mine["replies"]
    assert {r["seq"] for r in again["replies"]} == {r["seq"] for r in mine["replies"]}
