"""End to end in a real headless Chromium (Debian's package, driven by Playwright; no
browser download): consent with the keyboard, chat through a topic switch and an agent
hand-over, reload the page and restart the server mid-chat, check the cues on screen
(agents awake/asleep, tinted labelled bubbles, topic badge, progress), and save a
screenshot of the chat in ``tests/artifacts/``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from live_server import LiveServer, free_port
from services import require
from sqlalchemy import func, select
from web_support import RICH, SURVEY

CHROMIUM = os.environ.get("COMMUNITYBOTS_CHROMIUM") or shutil.which("chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    """Skipped locally without Debian's chromium; a failure under CI=true."""
    require(CHROMIUM is not None and Path(CHROMIUM).exists(),
            "Debian's chromium is not installed (apt-get install chromium; ci/services.sh does)")


def _start(db_url: str, port: int, **settings: object) -> LiveServer:
    from communitybots.web import Settings, create_app

    app = create_app(SURVEY, Settings(database_url=db_url, relevance="tfidf", **settings))
    return LiveServer(app, port)


def test_chat_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from communitybots.store import Message, make_engine

    db_url = f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    sent: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.set_default_timeout(15_000)

        def agent(agent_id: str):
            return page.locator(f"#agents li[data-agent='{agent_id}']")

        def say(text: str) -> None:
            expect(page.locator("#typing")).to_be_hidden()
            n = page.locator(".bubble.bot").count()
            page.locator("#text").fill(text)
            page.keyboard.press("Enter")  # Enter sends
            sent.append(text)
            expect(page.locator("#typing")).to_be_visible()  # "<agent> is typing…"
            expect(page.locator("#send")).to_be_disabled()
            expect(page.locator(".bubble.bot")).not_to_have_count(n)
            expect(page.locator("#typing")).to_be_hidden()

        with _start(db_url, port) as server:
            # consent, keyboard only
            page.goto(f"{server.url}/?condition=multi")
            page.locator("#consent").focus()
            page.keyboard.press("Space")
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            page.wait_for_url("**/chat")
            expect(page.locator("#chat[data-ready='true']")).to_have_count(1)

            # the cues: Hana awake, Wally asleep, topic badge, progress, tinted bubbles
            expect(agent("household")).to_have_class("agent agent-household awake")
            expect(agent("work")).to_have_class("agent agent-work asleep")
            expect(agent("work")).to_have_attribute("aria-label", "Wally the Work bot, asleep")
            expect(page.locator("#topic-badge")).to_have_text("Your home")
            expect(page.locator("#progress-text")).to_have_text("0 of 4 topics")
            first = page.locator(".bubble.bot").first
            expect(first.locator(".who")).to_have_text("Hana the Household bot")
            tint = first.evaluate("e => getComputedStyle(e).borderLeftColor")
            assert tint == "rgb(42, 157, 143)"  # Hana's colour #2a9d8f
            expect(page.locator("#text")).to_be_focused()

            say(RICH["dwelling"])
            # topic switch by the skip button, reached with the keyboard
            n = page.locator(".bubble.bot").count()
            page.locator("#skip").focus()
            page.keyboard.press("Enter")
            sent.append("Skip topic")
            expect(page.locator(".bubble.bot")).not_to_have_count(n)
            expect(page.locator("#typing")).to_be_hidden()
            expect(page.locator("#topic-badge")).to_have_text("Family life")
            expect(page.locator("#progress-text")).to_have_text("1 of 4 topics")

            # an answer with markup is shown as text, never run
            say("<img src=x onerror=\"document.title='pwned'\"> <b>bold</b> we cook together")
            assert page.locator("#log img, #log b").count() == 0
            expect(page.locator(".bubble.mine").last).to_contain_text("<b>bold</b>")
            assert page.title() != "pwned"

            # reload mid-chat: the conversation and the cues come back
            before = page.locator(".bubble").count()
            page.reload()
            expect(page.locator("#chat[data-ready='true']")).to_have_count(1)
            expect(page.locator(".bubble")).to_have_count(before)
            expect(page.locator("#topic-badge")).to_have_text("Family life")

        # the server restarts (state in the database, session in the cookie)
        with _start(db_url, port) as server:
            page.reload()
            expect(page.locator("#chat[data-ready='true']")).to_have_count(1)
            expect(page.locator(".bubble")).to_have_count(before)
            for _ in range(6):  # answer until Hana hands over to Wally
                if "awake" in (agent("work").get_attribute("class") or ""):
                    break
                say(RICH["family"])
            expect(agent("work")).to_have_class("agent agent-work awake")
            expect(agent("household")).to_have_class("agent agent-household asleep")
            expect(page.locator("#topic-badge")).to_have_text("Commute")
            wally = page.locator(".bubble.bot.agent-work").first
            expect(wally.locator(".who")).to_have_text("Wally the Work bot")
            expect(wally).to_contain_text("I'm Wally")
            assert wally.evaluate("e => getComputedStyle(e).borderLeftColor") == "rgb(231, 111, 81)"
            say(RICH["commute"])
            page.screenshot(path=str(ARTIFACTS / "chat.png"))
            on_screen = page.locator(".bubble").count()

            # the researcher sees this participant on the dashboard and in the transcript
            from communitybots.web.accounts import create_admin

            with server.app.state.sessions() as db:
                create_admin(db, "ada", "correct horse battery")
            admin = browser.new_page(viewport={"width": 1280, "height": 1000})
            admin.goto(f"{server.url}/admin")
            admin.wait_for_url("**/admin/login**")
            admin.get_by_label("Username").fill("ada")
            admin.get_by_label("Password").fill("correct horse battery")
            admin.get_by_role("button", name="Log in").click()
            admin.wait_for_url(f"{server.url}/admin")
            expect(admin.locator("#summary")).to_contain_text("Participants")
            for img in admin.locator(".plots img").all():  # server-side plots, loaded
                expect(img).to_have_js_property("complete", True)
                assert img.evaluate("i => i.naturalWidth") > 0
            admin.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            admin.goto(f"{server.url}/admin/participants")
            admin.locator("table.data a").first.click()
            expect(admin.locator("#transcript .event").first).to_contain_text("survey_start")
            expect(admin.locator("#transcript")).to_contain_text("handover")
        browser.close()

    # every message the browser sent is in the database exactly once
    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(select(Message.text).where(Message.role == "participant")
                              .order_by(Message.seq)).scalars().all()
        assert stored == sent
        assert conn.scalar(select(func.count()).select_from(Message)) == on_screen
    engine.dispose()


def test_a_refused_message_is_explained_and_kept_for_editing(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw, _start(f"sqlite:///{tmp_path / 'limits.sqlite3'}", free_port(),
                                         rate_limit_messages=1) as server:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.set_default_timeout(15_000)
        page.goto(f"{server.url}/?condition=single")
        page.get_by_label("I am 18 or older", exact=False).check()
        page.get_by_role("button", name="Start the conversation").click()
        expect(page.locator("#chat[data-ready='true']")).to_have_count(1)
        expect(page.locator("#agents li")).to_have_count(1)  # one persona in this condition
        page.locator("#text").fill("We live in a small flat near the station.")
        page.keyboard.press("Enter")
        expect(page.locator(".bubble.mine")).to_have_count(1)
        expect(page.locator("#typing")).to_be_hidden()
        page.locator("#text").fill("And we have a cat.")
        page.keyboard.press("Enter")
        error = page.get_by_role("alert").filter(has_text="too many messages")
        expect(error).to_contain_text("at most 1 per 60 s; try again in")
        expect(page.locator(".bubble.mine")).to_have_count(1)  # the refused one is gone
        expect(page.locator("#text")).to_have_value("And we have a cat.")  # kept to resend
        browser.close()
