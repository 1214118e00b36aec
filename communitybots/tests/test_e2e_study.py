"""A whole study in a real headless Chromium: the platform set up from a survey file;
four randomized participants (two per condition, one of them from a recruitment panel)
through consent, the pre-chat questions, the tutorial, the chat with its clock and "End
chat", and the questionnaire; one who withdraws; a new version of the survey file with a
participant of its own; then the researcher's dashboard with the participant-level
comparison of version one, the audit log, and exports that carry versions, conditions
and both questionnaires."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from live_server import LiveServer, free_port
from sqlalchemy import func, select
from test_e2e_browser import (
    ARGS,
    ARTIFACTS,
    CHROMIUM,
    _needs_chromium,  # noqa: F401  (autouse fixture)
)

STUDY = Path(__file__).parent / "data" / "study_survey.yaml"
ANSWERS = [
    "We live in a two bedroom flat on Elm Street and the living room became an office.",
    "Our small house felt crowded, so we moved the desk into the bedroom by the window.",
    "I rented a room near the university and spent most days in the shared kitchen.",
    "We have a garden, which made lockdown bearable; the kids played outside all spring.",
]


def _server(survey: Path, db_url: str, port: int) -> LiveServer:
    from communitybots.web import Settings, create_app

    return LiveServer(create_app(survey, Settings(database_url=db_url, relevance="tfidf",
                                                  consents_per_address=0)), port)


def test_a_whole_study(tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect, sync_playwright

    from communitybots.store import Participant, make_engine

    survey = tmp_path / "study.yaml"
    survey.write_text(STUDY.read_text())
    db_url = f"sqlite:///{tmp_path / 'study.sqlite3'}"
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)

        def arrive(url: str) -> Page:
            """A new person (own cookies): consent, the questions, the tutorial, the chat."""
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(15_000)
            page.route("https://panel.example/**", lambda route: route.fulfill(
                status=200, content_type="text/plain", body="back at the panel"))
            page.goto(url)
            page.get_by_label("I am 18 or older", exact=False).check()
            page.get_by_role("button", name="Start the conversation").click()
            page.wait_for_url("**/pre")
            page.get_by_role("button", name="Continue").click()  # the browser wants the required ones
            assert page.url.endswith("/pre")
            page.get_by_label("How old are you?").fill("34")
            page.get_by_label("Woman").check()
            page.get_by_label("Which town do you live in?").fill("Springfield")
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url("**/tutorial")
            page.get_by_role("button", name="Start chatting").click()
            page.wait_for_url("**/chat")
            expect(page.locator("#chat[data-ready='true']")).to_have_count(1)
            return page

        def say(page: Page, text: str) -> None:
            n = page.locator(".bubble.bot").count()
            page.locator("#text").fill(text)
            page.keyboard.press("Enter")
            expect(page.locator(".bubble.bot")).not_to_have_count(n)
            expect(page.locator("#typing")).to_be_hidden()

        def take_part(url: str, answer: str, enjoyed: str, skip_all: bool = False) -> Page:
            page = arrive(url)
            expect(page.locator("#end-chat")).to_be_disabled()  # topics left, time not up
            expect(page.locator("#clock")).to_have_text(
                re.compile(r"^0:\d\d$"))
            say(page, answer)
            if skip_all:  # every topic done: End chat becomes available
                while page.locator("#composer").is_visible():
                    n = page.locator(".bubble.bot").count()
                    page.locator("#skip").click()
                    expect(page.locator(".bubble.bot")).not_to_have_count(n)
                    expect(page.locator("#typing")).to_be_hidden()
                expect(page.locator("#progress-text")).to_have_text("4 of 4 topics")
            else:  # or the participant stops the conversation
                say(page, "stop")
            page.locator("#end-chat").click()
            page.wait_for_url("**/survey")
            page.locator(f"input[name='item_enjoyed'][value='{enjoyed}']").check()
            page.get_by_role("button", name="Finish").click()
            return page

        with _server(survey, db_url, port) as server:
            # a panel participant goes back to the panel with the study's code
            first = take_part(f"{server.url}/?PROLIFIC_PID=5f1e2d3c&STUDY_ID=st-1&SESSION_ID=se-9",
                              ANSWERS[0], "5", skip_all=True)
            expect(first.locator("#completion-code")).to_have_text("C0DE42")
            expect(first.locator("meta[http-equiv='refresh']")).to_have_attribute(
                "content", "2; url=https://panel.example/complete?cc=C0DE42")  # moves on by itself
            first.locator("#panel-link").click()  # or at once
            first.wait_for_url("https://panel.example/complete?cc=C0DE42")
            for answer, enjoyed in zip(ANSWERS[1:], "423", strict=True):
                page = take_part(f"{server.url}/", answer, enjoyed)
                expect(page.locator("#completion-code")).to_contain_text("CB-")
                page.close()
            first.close()
            # the fifth withdraws from the chat page, after a confirmation
            quitter = arrive(f"{server.url}/")
            avatar = quitter.locator("#agents img.avatar").first  # SVG, no emoji font needed
            expect(avatar).to_have_js_property("complete", True)
            assert avatar.evaluate("i => i.naturalWidth") > 0
            say(quitter, "My address is 12 Elm Street and I would rather not say more.")
            quitter.locator("#withdraw").click()
            quitter.get_by_role("button", name="Delete my data").click()
            assert quitter.url.endswith("/withdraw")  # not without ticking the box
            quitter.get_by_label("Yes, delete my data and withdraw").check()
            quitter.get_by_role("button", name="Delete my data").click()
            expect(quitter.locator("#withdrawn")).to_be_visible()
            quitter.close()

        # the team edits the survey file: version two, served on the same database
        survey.write_text(survey.read_text().replace("version: v1", "version: v2").replace(
            "How did your commute change?", "How did your way to work change?"))
        with _server(survey, db_url, port) as server:
            newcomer = arrive(f"{server.url}/")
            say(newcomer, ANSWERS[0])
            newcomer.close()

            from communitybots.web.accounts import create_admin

            with server.app.state.sessions() as db:
                create_admin(db, "ada", "correct horse battery")
                assert db.scalar(select(func.count(Participant.id))) == 5
            admin = browser.new_page(viewport={"width": 1280, "height": 1000})
            admin.set_default_timeout(15_000)
            admin.goto(f"{server.url}/admin")
            admin.get_by_label("Username").fill("ada")
            admin.get_by_label("Password").fill("correct horse battery")
            admin.get_by_role("button", name="Log in").click()
            admin.wait_for_url(f"{server.url}/admin")
            expect(admin.locator("#view-note")).to_contain_text("v2")  # the version served
            admin.locator("#version").select_option(label=admin.locator(
                "#version option", has_text="v1").inner_text())
            admin.get_by_role("button", name="Show").click()
            expect(admin.locator("#view-note")).to_contain_text("survey version v1")
            row = admin.locator("#comparisons tr", has_text="Words per answer")
            cells = row.locator("td").all_inner_texts()
            assert cells[1] == "2" and cells[3] == "2", cells  # n per condition: participants
            assert float(cells[-1]) >= 0.33  # two and two: no p can fall below 1/3
            liked = admin.locator("#comparisons tr", has_text="I enjoyed the conversation")
            assert liked.locator("td").all_inner_texts()[1:5:2] == ["2", "2"]
            # (the plots load on their own time; test_e2e_browser.py waits for them)
            admin.locator("#comparisons").screenshot(path=str(ARTIFACTS / "study_comparison.png"))
            admin.goto(f"{server.url}/admin/audit")
            expect(admin.locator("#audit")).to_contain_text("withdraw")

            def export(name: str) -> list[dict[str, str]]:
                response = admin.request.get(f"{server.url}/admin/export/{name}.csv")
                assert response.ok
                return list(csv.DictReader(io.StringIO(response.text())))

            people = export("participants")
            assert sorted((p["survey_version"], p["condition"]) for p in people) == sorted(
                [("v1", "multi"), ("v1", "multi"), ("v1", "single"), ("v1", "single"),
                 ("v2", people[-1]["condition"])])
            assert [p["panel_id"] for p in people].count("5f1e2d3c") == 1
            answers = export("answers")
            assert {(a["phase"], a["survey_version"]) for a in answers} == {
                ("pre", "v1"), ("post", "v1"), ("pre", "v2")}
            assert len([a for a in answers if a["item_id"] == "enjoyed"]) == 4
            texts = {m["text"] for m in export("messages") if m["role"] == "participant"}
            assert not any("12 Elm Street" in t for t in texts)  # the withdrawn words are gone
            assert set(ANSWERS) <= texts
        browser.close()
    make_engine(db_url).dispose()
