"""Wizard-of-Oz end to end in a real headless Chromium: a participant and a researcher,
each in their own browser context, chat through the operator console: the participant
first waits with nobody online, the operator answers in their own words, hands over to
another agent on another topic, sends the CTM's suggestion and ends the chat; the export
shows the operator turns with the CTM's suggestions beside them. The operator's login
also expires mid-chat: the unsent move is kept and sent once after logging in again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from argon2 import PasswordHasher
from live_server import free_port
from sqlalchemy import update
from test_e2e_browser import ARGS, ARTIFACTS, CHROMIUM, _needs_chromium, _start  # noqa: F401
from web_support import RICH

from communitybots.store import Admin, AdminSession, utcnow


def test_a_wizard_conversation_in_two_browsers(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw, _start(f"sqlite:///{tmp_path / 'wizard.sqlite3'}",
                                         free_port()) as server:
        with server.app.state.sessions() as db:  # argon2id at its cheapest: a fast login
            cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
            db.add(Admin(username="ada", password_hash=cheap.hash("correct horse battery")))
            db.commit()
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        person = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        wizard = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        for page in (person, wizard):
            page.set_default_timeout(10_000)

        def agent(agent_id: str):
            return person.locator(f"#agents li[data-agent='{agent_id}']")

        def answer(text: str) -> None:
            n = person.locator(".bubble.mine").count()
            person.locator("#text").fill(text)
            person.keyboard.press("Enter")
            expect(person.locator(".bubble.mine")).to_have_count(n + 1)
            expect(wizard.locator("#w-log .bubble.mine")).to_have_count(n + 1)  # pushed

        def operator_says(text: str) -> None:
            wizard.locator("#w-text").fill(text)
            wizard.keyboard.press("Enter")
            expect(person.locator(".bubble.bot").last.locator(".text")).to_have_text(text)

        # the participant: the team's page, nobody online yet
        person.goto(f"{server.url}/?condition=wizard")
        person.get_by_label("I am 18 or older", exact=False).check()
        person.get_by_role("button", name="Start the conversation").click()
        expect(person.locator("#chat[data-ready='true']")).to_have_count(1)
        expect(agent("household")).to_have_class("agent agent-household awake")
        expect(agent("work")).to_have_class("agent agent-work asleep")
        person.locator("#text").fill(RICH["dwelling"])
        person.keyboard.press("Enter")
        expect(person.locator("#wizard-note")).to_contain_text(
            "The chatbots are busy right now")

        # the researcher logs in and opens the conversation from the queue
        wizard.goto(f"{server.url}/admin/wizard")
        wizard.get_by_label("Username").fill("ada")
        wizard.get_by_label("Password").fill("correct horse battery")
        wizard.get_by_role("button", name="Log in").click()
        expect(wizard.locator("#queue td.waiting")).to_have_count(1)
        wizard.locator("#queue a").click()
        expect(wizard.locator("#console[data-ready='true']")).to_have_count(1)
        expect(wizard.locator("#claim-note")).to_have_text("You are answering this conversation.")
        expect(wizard.locator("#w-suggestion")).to_contain_text("Could you tell me more about that?")
        expect(wizard.locator("#w-log .bubble.mine")).to_contain_text(RICH["dwelling"][:30])
        # an operator answers: the participant sees the active agent typing, no notice
        expect(person.locator("#wizard-note")).to_be_hidden()
        expect(person.locator("#typing")).to_contain_text("Hana the Household bot is typing")

        operator_says("Which room did you use the most?")
        expect(person.locator(".bubble.bot").last.locator(".who")).to_have_text(
            "Hana the Household bot")
        expect(person.locator("#typing")).to_be_hidden()

        # hand-over and topic change: Wally asks about the commute
        answer("The kitchen, we cooked a lot there.")
        wizard.locator("#w-as-topic").select_option("commute")
        expect(wizard.locator("#w-as-agent")).to_have_value("work")  # the topic's own agent
        operator_says("Hello, I'm Wally. How did your commute change?")
        expect(agent("work")).to_have_class("agent agent-work awake")
        expect(agent("household")).to_have_class("agent agent-household asleep")
        expect(person.locator("#topic-badge")).to_have_text("Commute")
        expect(person.locator("#progress-text")).to_have_text("1 of 4 topics")
        expect(person.locator(".bubble.bot").last.locator(".who")).to_have_text("Wally the Work bot")
        expect(wizard.locator("#w-log .event .kind").filter(has_text="handover")).to_have_count(1)
        expect(wizard.locator("#w-topics li.done")).to_contain_text("Your home")

        # the login expires mid-chat: the move is kept, and sent once after logging in again
        with server.app.state.sessions() as db:
            db.execute(update(AdminSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
            db.commit()
        wizard.locator("#w-text").fill("Do you still commute now?")
        wizard.keyboard.press("Enter")
        expect(wizard.locator("#console-error")).to_contain_text("Your login has expired")
        wizard.locator("#relogin").click()
        wizard.get_by_label("Username").fill("ada")
        wizard.get_by_label("Password").fill("correct horse battery")
        wizard.get_by_role("button", name="Log in").click()
        expect(wizard.locator("#console[data-ready='true']")).to_have_count(1)
        expect(wizard.locator("#w-text")).to_have_value("Do you still commute now?")
        expect(wizard.locator("#w-send")).to_be_enabled()
        wizard.locator("#w-send").click()
        expect(person.locator(".bubble.bot").last.locator(".text")).to_have_text(
            "Do you still commute now?")

        # the CTM's suggestion, sent as it is
        answer(RICH["commute"])
        expect(wizard.locator("#w-use")).to_be_enabled()
        wizard.locator("#w-use").click()
        expect(person.locator(".bubble.bot").last.locator(".text")).to_have_text(
            "What did you do with the time?")
        person.screenshot(path=str(ARTIFACTS / "wizard_chat.png"))
        wizard.screenshot(path=str(ARTIFACTS / "wizard_console.png"), full_page=True)

        # the operator ends the chat
        wizard.locator("#w-end").click()
        expect(person.locator("#finished")).to_be_visible()
        expect(wizard.locator("#claim-note")).to_have_text("This conversation has ended.")

        # the export: the operator's turns, each with the CTM's suggestion beside it
        export = wizard.request.get(f"{server.url}/admin/export/messages.jsonl")
        rows = [json.loads(line) for line in export.text().splitlines()]
        ops = [r for r in rows if r["operator"] == "ada"]
        assert [(r["agent_id"], r["kind"]) for r in ops] == [
            ("household", "wizard"), ("work", "wizard"), ("work", "wizard"), ("work", "ack"),
            ("work", "probe"), ("work", "end")]
        assert ops[0]["suggestion"]["replies"][-1]["text"] == "Could you tell me more about that?"
        # beside the hand-over: what the CTM made of "The kitchen, ..."
        assert ops[1]["suggestion"]["turn"] > ops[0]["suggestion"]["turn"]
        assert ops[1]["suggestion"]["decisions"] and ops[1]["suggestion"]["replies"]
        assert [r["text"] for r in ops].count("Do you still commute now?") == 1
        assert ops[4]["suggestion"]["replies"][-1]["text"] == ops[4]["text"]
        browser.close()
