"""The pages of issue 12 in a real headless Chromium (Debian's package, through
Playwright): right-to-left override characters stay inside their bubble, the session
ends when the completion code is shown (the next person at a kiosk sees nothing of it),
"I'm a new participant" starts afresh (a message the previous person left unsent is
dropped, never sent as the next one's), and deleting a participant needs the
confirmation box ticked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from live_server import LiveServer, free_port
from sqlalchemy import func, select
from web_support import SURVEY

CHROMIUM = os.environ.get("COMMUNITYBOTS_CHROMIUM") or shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install chromium; ci/services.sh does)")


def _start(db_url: str) -> LiveServer:
    from communitybots.web import Settings, create_app

    app = create_app(SURVEY, Settings(database_url=db_url, relevance="tfidf"))
    return LiveServer(app, free_port())


def test_kiosk_rtl_and_confirmed_delete(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from communitybots.store import Message, Participant
    from communitybots.web.accounts import create_admin

    with sync_playwright() as pw, _start(f"sqlite:///{tmp_path / 'kiosk.sqlite3'}") as server:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        kiosk = browser.new_page(viewport={"width": 390, "height": 844})
        kiosk.set_default_timeout(15_000)

        def start_chat() -> None:
            kiosk.goto(server.url + "/?condition=multi")
            kiosk.get_by_label("I am 18 or older", exact=False).check()
            kiosk.get_by_role("button", name="Start the conversation").click()
            expect(kiosk.locator("#chat[data-ready='true']")).to_have_count(1)

        # first person: an answer with a right-to-left override, then skip to the end
        start_chat()
        kiosk.locator("#text").fill("\u202eevil reversed, we cook at home")
        kiosk.keyboard.press("Enter")
        mine = kiosk.locator(".bubble.mine .text").last
        expect(mine).to_have_attribute("dir", "auto")
        assert mine.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
        label = kiosk.locator(".bubble.mine .who").last
        assert label.evaluate("e => getComputedStyle(e).direction") == "ltr"  # no leak
        expect(kiosk.locator("#typing")).to_be_hidden()
        while kiosk.locator("#finished").is_hidden():
            n = kiosk.locator(".bubble.bot").count()
            kiosk.locator("#skip").click()
            expect(kiosk.locator(".bubble.bot")).not_to_have_count(n)
            expect(kiosk.locator("#typing")).to_be_hidden()
        kiosk.locator("#continue").click()
        kiosk.get_by_role("button", name="Finish").click()
        expect(kiosk.locator("#completion-code")).to_contain_text("CB-")

        # the next person at the same browser: nothing to continue, nothing to read
        kiosk.go_back()
        kiosk.goto(server.url + "/chat")
        kiosk.wait_for_url(server.url + "/")
        expect(kiosk.locator("#resume")).to_have_count(0)
        assert kiosk.evaluate("fetch('/api/session').then(r => r.status)") == 401

        # a second person starts, a message of theirs is left unsent (lost response), they
        # walk away; the third says "I'm a new participant"
        start_chat()
        kiosk.evaluate("""fetch('/api/session').then(r => r.json()).then(d =>
            localStorage.setItem('cb_pending', JSON.stringify({client_id: 'left-1',
                text: 'my secret address', kind: 'message', owner: d.participant})))""")
        kiosk.goto(server.url + "/")
        expect(kiosk.locator("#resume")).to_contain_text("continue where you left off")
        kiosk.get_by_role("button", name="I'm a new participant").click()
        kiosk.wait_for_url(server.url + "/")
        expect(kiosk.locator("#resume")).to_have_count(0)
        assert kiosk.evaluate("fetch('/api/session').then(r => r.status)") == 401
        start_chat()  # the third person's chat never sends the second one's kept message
        expect(kiosk.locator(".bubble.mine")).to_have_count(0)
        assert kiosk.evaluate("localStorage.getItem('cb_pending')") is None
        assert "my secret address" not in kiosk.content()

        # the researcher deletes one participant: not without ticking the box
        with server.app.state.sessions() as db:
            create_admin(db, "ada", "correct horse battery")
            public_id = db.scalar(select(Participant.public_id).order_by(Participant.id))
        admin = browser.new_page(viewport={"width": 1280, "height": 1000})
        admin.set_default_timeout(15_000)
        admin.goto(f"{server.url}/admin/participants/{public_id}")
        admin.get_by_label("Username").fill("ada")
        admin.get_by_label("Password").fill("correct horse battery")
        admin.get_by_role("button", name="Log in").click()
        admin.wait_for_url(f"{server.url}/admin/participants/{public_id}")
        text = admin.locator("#transcript .bubble.mine .text").first
        expect(text).to_have_attribute("dir", "auto")
        delete = admin.get_by_role("button", name=f"Delete all data of {public_id}")
        delete.click()  # the browser refuses: the confirmation box is required
        assert admin.url.endswith(f"/admin/participants/{public_id}")
        with server.app.state.sessions() as db:
            assert db.scalar(select(func.count(Participant.id))) == 3
        admin.get_by_label(f"Yes, delete all data of {public_id}").check()
        delete.click()
        expect(admin.get_by_role("status")).to_contain_text(f"Deleted all data of participant {public_id}")
        with server.app.state.sessions() as db:
            assert db.scalar(select(func.count(Participant.id))) == 2
            assert db.scalar(select(func.count(Message.id)).where(
                Message.text == "my secret address")) == 0
        browser.close()
