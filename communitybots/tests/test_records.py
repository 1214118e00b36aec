"""Retention, deletion and the audit log: the purge after the retention period (with a
frozen clock), the ``communitybots purge`` command, bulk deletion and paging in the
admin, the SVG avatars, and the spec's checks of the study sections."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_study_pages import PRE_OK, STUDY, _post, study_client  # noqa: F401  (fixture)
from test_web_admin import admin_csrf
from web_support import RICH, log_in, make_admin, send

from communitybots import analytics, records
from communitybots.spec import SpecError, parse_survey
from communitybots.store import (
    Answer,
    AuditRow,
    EventRow,
    Message,
    Participant,
)

ROOT = Path(__file__).resolve().parents[1]


def _chat(client: Any, condition: str, answer: str) -> str:
    """A participant through the questions and tutorial with one answer; their id."""
    _post(client, "/consent", {"consent": "yes", "condition": condition})
    _post(client, "/pre", PRE_OK)
    _post(client, "/tutorial", {})
    send(client, answer)
    return client.get("/api/session").json()["participant"]


def test_purge_after_the_retention_period_with_a_frozen_clock(study_client) -> None:  # noqa: F811
    client = study_client()
    old = _chat(client, "multi", RICH["dwelling"])
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == old))
        db.add(Answer(participant_id=p.id, phase="post", item_id="comment", value="my words"))
        db.add(Answer(participant_id=p.id, phase="post", item_id="enjoyed", value="4"))
        db.commit()
        last = p.last_active_at
        before = analytics.participant_values(analytics.load(db, include_link=True))
    client.cookies.clear()
    recent = _chat(client, "single", RICH["family"])
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        q = db.scalar(select(Participant).where(Participant.public_id == recent))
        q.last_active_at = last + dt.timedelta(days=20)
        db.commit()
        # day 30 after the first one's last message: not yet due
        assert records.purge(db, 30, now=last + dt.timedelta(days=30)) == 0
        # a second later it is; the other one (20 days younger) stays
        now = last + dt.timedelta(days=30, seconds=1)
        assert records.purge(db, 30, now=now) == 1
        assert records.purge(db, 30, now=now) == 0  # nothing twice
        texts = db.execute(select(Message.role, Message.text, Message.words).where(
            Message.participant_id == p.id)).all()
        assert [t for r, t, _w in texts if r == "participant"] == [""]
        assert [w for r, _t, w in texts if r == "participant"] == [len(RICH["dwelling"].split())]
        assert all(t for r, t, _w in texts if r == "bot")  # the bots' lines are not theirs
        quoted = [e.data for e in db.scalars(select(EventRow).where(EventRow.participant_id == p.id))]
        assert not any("text" in d for d in quoted)
        answers = dict(db.execute(select(Answer.item_id, Answer.value).where(
            Answer.participant_id == p.id)).all())
        assert answers["comment"] == "" and answers["enjoyed"] == "4" and answers["city"] == ""
        assert answers["age"] == "34"
        assert db.scalar(select(Message.text).where(Message.participant_id == q.id,
                                                    Message.role == "participant")) == RICH["family"]
        entry = db.scalar(select(AuditRow).where(AuditRow.action == "purge"))
        assert (entry.participant, entry.actor, entry.at) == (old, "retention", now)
        assert entry.detail == {"retention_days": 30, "messages": 1, "free_text_answers": 3}
        # the measures do not change: word counts are kept
        after = analytics.participant_values(analytics.load(db, include_link=True))
        words = float(len(RICH["dwelling"].split()))
        assert after["words_per_answer"]["multi"] == before["words_per_answer"]["multi"] == [words]


def test_purge_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from communitybots.cli import app

    url = f"sqlite:///{tmp_path / 'cb.sqlite3'}"
    ok = CliRunner().invoke(app, ["purge", str(STUDY), "--database-url", url])
    assert ok.exit_code == 0, ok.output
    assert "purged the raw text of 0 participants inactive for more than 30 days" in ok.output
    assert str(tmp_path / "cb.sqlite3") in ok.output  # the file, by its absolute path
    other = tmp_path / "no_retention.yaml"
    other.write_text(STUDY.read_text().replace("retention_days: 30\n", ""))
    bad = CliRunner().invoke(app, ["purge", str(other), "--database-url", url])
    assert bad.exit_code == 2 and "error: no retention period" in bad.output
    assert CliRunner().invoke(app, ["purge", str(other), "--days", "7", "--database-url", url]).exit_code == 0


def test_participants_paged_searched_and_deleted_in_bulk(study_client) -> None:  # noqa: F811
    client = study_client()
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        survey_pk = client.app.state.study.survey_pk  # type: ignore[attr-defined]
        for i in range(53):
            db.add(Participant(public_id=f"{i:04x}aa", token_hash=f"{i:064x}", survey_pk=survey_pk,
                               condition="multi" if i % 2 else "single", assignment="random",
                               status="chatting", state_json={}, panel_id=f"PID{i:03d}"))
        db.commit()
    make_admin(client)
    log_in(client)
    first = client.get("/admin/participants").text
    assert "Page 1 of 2" in first and "0034aa" in first and "0000aa" not in first  # newest first
    second = client.get("/admin/participants?page=2").text
    assert "0002aa" in second and "0034aa" not in second
    assert "1 participant found" in client.get("/admin/participants?q=PID007").text
    assert "26 participants found" in client.get("/admin/participants?q=multi").text
    assert client.get("/admin/participants?q=%27%3B--").status_code == 400
    ids = ["0001aa", "0002aa", "0003aa"]
    unconfirmed = client.post("/admin/participants/delete", data={"csrf_token": admin_csrf(client), "ids": ids})
    assert unconfirmed.status_code == 400 and "to confirm" in unconfirmed.text
    done = client.post("/admin/participants/delete", data={"csrf_token": admin_csrf(client), "ids": ids,
                                                           "confirm": "yes"}, follow_redirects=False)
    assert done.status_code == 303
    assert "Deleted all data of 3 participants" in client.get(done.headers["location"]).text
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        assert db.scalars(select(Participant).where(Participant.public_id.in_(ids))).all() == []
        logged = db.scalars(select(AuditRow).order_by(AuditRow.id)).all()
    assert [(a.action, a.participant, a.actor) for a in logged] == [
        ("delete", i, "researcher ada") for i in ids]
    audit = client.get("/admin/audit").text
    assert all(i in audit for i in ids) and "researcher ada" in audit


def test_avatars_are_svg_for_every_icon(study_client) -> None:  # noqa: F811
    from communitybots.spec import AVATAR_ICONS, Agent
    from communitybots.web import avatars

    client = study_client()
    response = client.get("/avatars/household.svg")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert response.text.startswith("<svg") and "<path" in response.text and "#2a9d8f" in response.text
    assert client.get("/avatars/single.svg").status_code == 200  # the single condition's bot
    assert client.get("/avatars/nobody.svg").status_code == 404
    for icon in AVATAR_ICONS:  # every icon the spec accepts draws shapes, no text
        agent = Agent(id="a", name="A", domain="d", introduction="Hi", avatar=icon,
                      topics=[{"id": "t", "title": "T", "opening": "o", "questions": ["q"],
                               "probes": ["p"], "closing": "c"}])
        assert "<text" not in avatars.svg(agent)
    lettered = agent.model_copy(update={"avatar": "<A&"})
    assert "&lt;A&amp;" in avatars.svg(lettered)  # characters escaped


BASE = {"id": "s", "title": "S", "agents": [{"id": "a", "name": "A", "domain": "d", "introduction": "Hi",
        "topics": [{"id": "t", "title": "T", "opening": "o", "questions": ["q"], "probes": ["p"],
                    "closing": "c"}]}]}


@pytest.mark.parametrize(("extra", "error"), [
    ({"pre_survey": [{"id": "g", "text": "Gender?", "kind": "choice", "options": ["A"]}]},
     "pre_survey[0]: a choice item needs at least 2 options"),
    ({"pre_survey": [{"id": "g", "text": "Age?", "kind": "number", "options": ["A", "B"]}]},
     "pre_survey[0]: options is only for kind choice, not number"),
    ({"post_survey": [{"id": "x", "text": "X", "kind": "text", "scale": 7}]},
     "post_survey[0]: scale is only for kind likert, not text"),
    ({"pre_survey": [{"id": "x", "text": "X", "kind": "number", "min": 5, "max": 1}]},
     "pre_survey[0]: min (5) is more than max (1)"),
    ({"pre_survey": [{"id": "x", "text": "X", "kind": "text"}],
      "post_survey": [{"id": "x", "text": "Y", "kind": "text"}]},
     "post_survey[0].id: duplicate item id 'x' (ids are unique across pre_survey and post_survey)"),
    ({"panel": {"completion_url": "javascript:alert(1)"}},
     "panel.completion_url: String should match pattern"),
    ({"tutorial": {"multi": "Team"}}, "tutorial.single: Field required"),
    ({"retention_days": 0}, "retention_days: Input should be greater than or equal to 1"),
])
def test_study_sections_are_checked(extra: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_survey({**BASE, **extra})
    assert str(err.value).startswith(error)


def test_panel_completion_link() -> None:
    survey = parse_survey({**BASE, "panel": {"completion_url": "https://x.example/done?cc="}})
    assert survey.panel.completion_link("AB12") == "https://x.example/done?cc=AB12"
    survey = parse_survey({**BASE, "panel": {"completion_url": "https://x.example/{code}/end"}})
    assert survey.panel.completion_link("AB12") == "https://x.example/AB12/end"


def test_readme_paths_exist_where_it_says_to_run_them() -> None:
    """Every survey path in the README's commands and code exists from ``communitybots/``."""
    blocks = "\n".join(re.findall(r"```\w*\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
    paths = set(re.findall(r"(?<![\w/.])((?:src/communitybots/)?surveys/[\w.-]+\.yaml)", blocks))
    assert paths, "the README names the shipped survey"
    assert all((ROOT / p).exists() for p in paths), [p for p in paths if not (ROOT / p).exists()]


def test_the_server_purges_at_start_up(study_client) -> None:  # noqa: F811
    client = study_client()
    public_id = _chat(client, "single", RICH["dwelling"])
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == public_id))
        p.last_active_at -= dt.timedelta(days=31)  # the survey keeps raw text 30 days
        db.commit()
    restarted = study_client()  # a server start: migrations, then the purge
    with restarted.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == public_id))
        assert p.purged_at is not None
        assert db.scalar(select(Message.text).where(Message.participant_id == p.id,
                                                    Message.role == "participant")) == ""
    make_admin(restarted)
    log_in(restarted)
    page = restarted.get(f"/admin/participants/{public_id}").text
    assert f"text purged after the retention period ({len(RICH['dwelling'].split())} words)" in page
    assert "(text purged)" in restarted.get("/admin/participants").text


def test_make_bots_and_admin_create_share_a_database() -> None:
    """``make bots`` serves from ``communitybots/``, where the READMEs run ``admin
    create``: both open ``communitybots/communitybots.sqlite3`` by default."""
    makefile = (ROOT.parent / "Makefile").read_text()
    recipe = makefile.split("\nbots:", 1)[1].split("\n\n", 1)[0]
    assert "cd communitybots && ../$(BIN)/communitybots serve src/communitybots/surveys/" in recipe
    assert "cd communitybots" in (ROOT / "README.md").read_text().split("admin create ada", 1)[0][-300:]
    assert "cd communitybots &&\n../.venv/bin/communitybots admin create" in (ROOT.parent / "README.md").read_text()
