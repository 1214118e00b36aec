"""Load benchmark of the web platform on loopback, without an LLM.

Starts ``communitybots serve`` (uvicorn, its default worker count unless told) on a fresh database, then N
simulated participants at once, each with its own cookies: landing page, consent, the
pre-chat questions and the tutorial when the survey has them; once every participant
is through those pages, M chat messages each, sent one after another with a think time
between them, as people type. A share of the messages is sent twice with the same
idempotency key, as a browser does when a response is lost. At the end it counts the participants' messages in the
database: exactly N x M must be there, none lost, none stored twice.

Reported: reply latency of POST /api/messages (p50, p95, p99, max, measured by the
client, so it includes HTTP on loopback, the CTM step and the database transaction),
throughput, errors, the database counts, and the server's CPU (its processes' user +
system time) per request, per chat message and per request of the pages before the
chat. Writes ``benchmarks/results/load*.json``.

    python benchmarks/load.py                       # 200 participants x 30 messages, SQLite
    python benchmarks/load.py --database-url postgresql+psycopg://...
    python benchmarks/load.py --think 0 0           # no think time: saturation
    python benchmarks/load.py --profile /tmp/load.prof   # py-spy: where the server's time goes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from communitybots.spec import load_survey
from communitybots.web.commands import default_workers
from communitybots.web.serving import free_port, wait_until_serving

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
SURVEY = PACKAGE / "src" / "communitybots" / "surveys" / "covid_daily_life.yaml"

ANSWERS = [
    "We mostly stayed at home and cooked together in the evenings.",
    "It was hard at first, but after a few weeks we found a routine that worked.",
    "I walked the dog twice a day and called my sister every Sunday.",
    "Our flat felt small, so we moved the desk into the bedroom.",
    "The kids did school on a laptop in the kitchen while I worked on the sofa.",
    "I started cycling to the shop instead of taking the bus.",
    "We ordered groceries online, usually on Tuesdays, and the delivery was often late.",
    "Video calls with friends helped, but I missed seeing people in person.",
]


def form_answers(items: list) -> dict[str, str]:
    """A valid answer to every item of a questionnaire (``item_<id>`` form fields)."""
    answers = {}
    for item in items:
        if item.kind == "number":
            low = item.min if item.min is not None else 0
            answers[f"item_{item.id}"] = str(int(max(low, min(item.max or 30, 30))))
        elif item.kind == "choice":
            answers[f"item_{item.id}"] = item.options[0]
        elif item.kind == "likert":
            answers[f"item_{item.id}"] = str((item.scale + 1) // 2)
        else:
            answers[f"item_{item.id}"] = "Leeds"
    return answers


#: the pages between consent and chat that ``participant`` goes through
BEFORE_CHAT = ("/pre", "/tutorial")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class ChatStart:
    """The moment every participant has finished the pages before the chat (or given
    up): the server's CPU is read then, so the chat's messages are counted apart from
    the landing pages, consents and pre-chat pages."""

    def __init__(self, participants: int, server_pid: int):
        self.left = participants
        self.server_pid = server_pid
        self.cpu = 0.0
        self.system_cpu = 0.0
        self.at = 0.0
        self.event = asyncio.Event()

    async def arrive(self) -> None:
        self.left -= 1
        if self.left == 0:
            user, self.system_cpu = cpu_times(self.server_pid)
            self.cpu = user + self.system_cpu
            self.at = time.perf_counter()
            self.event.set()
        await self.event.wait()


@dataclass
class Answer:
    status_code: int
    text: str
    headers: Mapping[str, str]


#: what a participant's request may fail with on the way (a dropped connection, a timeout)
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class Browser:
    """One participant's browser: its own cookies and keep-alive connection; redirects are
    not followed (the participant reads the next page from ``Location``). aiohttp, not
    httpx: httpx cost the generator about 2.9 ms of CPU per request, more than half of
    what the server spent, on the same two cores."""

    def __init__(self, base: str):
        # unsafe: keep cookies of a host given by IP address (127.0.0.1)
        self.session = aiohttp.ClientSession(
            base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=60.0))

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.session.close()

    async def get(self, path: str) -> Answer:
        return await self._request("GET", path)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self._request("POST", path, **kwargs)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.session.request(method, path, allow_redirects=False, **kwargs) as r:
            return Answer(r.status, await r.text(), r.headers)


async def participant(base: str, index: int, messages: int, think: tuple[float, float],
                      duplicate_share: float, latencies: list[float], errors: list[str],
                      errors_retried: list[str], seed: int, pre_answers: dict[str, str],
                      setup_requests: list[int], arrival: float, chat: ChatStart) -> int:
    rng = random.Random(seed * 100_003 + index)
    async with Browser(base) as client:
        token = await setup(client, rng, errors, pre_answers, setup_requests, arrival)
        await chat.arrive()
        if token is None:
            return 0
        return await converse(client, token, rng, messages, think, duplicate_share,
                              latencies, errors, errors_retried)


async def setup(client: Browser, rng: random.Random, errors: list[str],
                pre_answers: dict[str, str], setup_requests: list[int],
                arrival: float) -> str | None:
    """Landing page, consent, the pre-chat questions and the tutorial: the page's CSRF
    token, or None when this participant gave up (counted as lost)."""
    await asyncio.sleep(rng.uniform(0, arrival))  # arrivals spread over ``arrival`` s
    try:
        page = await client.get("/")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        consent = await client.post("/consent", data={"csrf_token": token, "consent": "yes"})
    except TRANSPORT_ERRORS as err:  # this participant gives up: counted as lost
        errors.append(f"landing or consent: {type(err).__name__}")
        return None
    if consent.status_code != 303:
        errors.append(f"consent {consent.status_code}")
        return None
    page = consent.headers.get("location", "/chat")
    setup_requests.append(2)
    while page in BEFORE_CHAT:  # the pre-chat questions, the tutorial
        fields = {"csrf_token": token, **(pre_answers if page == "/pre" else {})}
        try:
            step = await client.post(page, data=fields)
        except TRANSPORT_ERRORS as err:
            errors.append(f"{page}: {type(err).__name__}")
            return None
        setup_requests.append(1)
        if step.status_code != 303:
            errors.append(f"{page} {step.status_code}")
            return None
        page = step.headers.get("location", "/chat")
    return token


async def converse(client: Browser, token: str, rng: random.Random, messages: int,
                   think: tuple[float, float], duplicate_share: float, latencies: list[float],
                   errors: list[str], errors_retried: list[str]) -> int:
    """``messages`` chat messages with a think time before each; the messages stored."""
    accepted = 0
    for _ in range(messages):
        await asyncio.sleep(rng.uniform(*think))
        body = {"client_id": uuid.uuid4().hex, "text": rng.choice(ANSWERS), "kind": "message"}
        sends = 2 if rng.random() < duplicate_share else 1
        for _attempt in range(sends):
            t0 = time.perf_counter()
            for _retry in range(5):  # a dropped connection: send again, same key
                try:
                    response = await client.post("/api/messages", json=body,
                                                 headers={"X-CSRF-Token": token})
                    break
                except TRANSPORT_ERRORS as err:
                    errors_retried.append(type(err).__name__)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                errors.append(f"message {response.status_code}: {response.text[:120]}")
                break
        else:
            accepted += 1
    return accepted


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1] is the parent pid
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children."""
    return sum(cpu_times(pid))


def wait_until_idle(pid: int, timeout: float = 180.0, quiet_s: float = 0.05) -> float:
    """Wait until the server and its workers use less than ``quiet_s`` CPU seconds in a
    second, twice in a row: ``serve`` answers as soon as its first worker is up, while the
    others still import and train their NLU, CPU that is no part of serving a message.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    last = cpu_seconds(pid)
    while quiet < 2 and time.perf_counter() - t0 < timeout:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < quiet_s else 0
        last = now
    return time.perf_counter() - t0


#: where a server sample's time goes: the first category whose marker is in the stack
#: (innermost parts first), else "other"
PROFILE_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("CTM state (de)serialisation", ("State.from_json", "State.to_json")),
    # the label predates the split of nlu.py into the nlu/ package; the marker is the package
    ("CTM step: language understanding (nlu.py)", ("communitybots/nlu/",)),
    ("CTM step: engine (ctm.py)", ("ctm.py",)),
    ("database: participant by cookie", ("find_participant",)),
    ("database: rate-limit query", ("check_rate",)),
    ("database: idempotency key and rate window (one SELECT)", ("_turn_lookup",)),
    ("database: participant UPDATE", ("_update_participant",)),
    ("database: the turn's INSERTs", ("_append (", "_insert (")),
    ("database: commit", ("Session.commit", "Session.flush")),
    ("database: idempotency lookup, replay, rest of take_turn", ("take_turn (",)),
    ("database: session end (get_db)", ("get_db", "Session.close")),
    ("consent (new participants)", ("consent (",)),
    ("SQLAlchemy, other", ("sqlalchemy/",)),
    ("FastAPI/Starlette: routing, dependencies, validation, JSON", ("fastapi/", "starlette/",
                                                                     "pydantic")),
    ("middleware (CSRF cookie, headers, body cap)", ("BrowserMiddleware", "BodyLimitMiddleware")),
    ("uvicorn: HTTP parsing, event loop", ("uvicorn/", "httptools", "asyncio/", "uvloop")),
    ("thread pool hand-offs (anyio, threading)", ("anyio/", "threading.py")),
]


IDLE_FRAMES = ("Condition.wait", "Queue.get", "Event.wait")


def start_profiler(pid: int, out: str) -> subprocess.Popen:
    """py-spy (the ``dev`` extra) sampling the server and its worker processes."""
    profiler = subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
         "--subprocesses", "--nonblocking", "--rate", "50", "--format", "raw",
         "--output", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)  # attached before the clients start
    return profiler


def stop_profiler(profiler: subprocess.Popen) -> None:
    profiler.send_signal(2)  # SIGINT: py-spy stops sampling and writes the file
    profiler.wait(timeout=120)


def summarise_profile(path: str) -> dict[str, float]:
    """Shares of the server's non-idle samples per category (``PROFILE_CATEGORIES``)."""
    counts: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "serve (communitybots/web/commands.py" in stack and \
                "Server.run" not in stack:
            continue  # the supervisor of several workers
        if stack.rsplit(";", 1)[-1].startswith(IDLE_FRAMES):
            continue  # a pool thread waiting for work, seen while it wakes
        name = next((c for c, marks in PROFILE_CATEGORIES if any(m in stack for m in marks)),
                    "other")
        counts[name] = counts.get(name, 0) + int(n)
    total = sum(counts.values()) or 1
    shares = {k: round(100 * v / total, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    print("server time by part (% of py-spy samples):", file=sys.stderr)
    for k, v in shares.items():
        print(f"  {v:5.1f} %  {k}", file=sys.stderr)
    return shares


def count_in_database(url: str) -> dict[str, int]:
    sys.path.insert(0, str(PACKAGE / "src"))
    from sqlalchemy import func, select

    from communitybots.store import Message, Participant, make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        own = Message.role == "participant"
        counts = {
            "participants": conn.scalar(select(func.count(Participant.id))),
            "participant_messages": conn.scalar(select(func.count(Message.id)).where(own)),
            "distinct_client_ids": conn.scalar(select(func.count()).select_from(
                select(Message.participant_id, Message.client_id).where(own).distinct().subquery())),
            "bot_messages": conn.scalar(select(func.count(Message.id)).where(Message.role == "bot")),
        }
    engine.dispose()
    return counts


async def run_clients(base: str, args: argparse.Namespace, server_pid: int
                      ) -> tuple[list[float], list[str], list[str], list[int], float, int,
                                 ChatStart]:
    latencies: list[float] = []
    errors: list[str] = []
    retried: list[str] = []
    setup: list[int] = []
    pre_answers = form_answers(load_survey(SURVEY).pre_survey)
    think = tuple(args.think)
    chat = ChatStart(args.participants, server_pid)
    t0 = time.perf_counter()
    accepted = await asyncio.gather(*[
        participant(base, i, args.messages, think, args.duplicates, latencies,
                    errors, retried, args.seed, pre_answers, setup,
                    think[1] if args.arrival is None else args.arrival, chat)
        for i in range(args.participants)])
    return (latencies, errors, retried, list(accepted), time.perf_counter() - t0, sum(setup),
            chat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--think", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                        help="seconds between a reply and the next message (uniform)")
    parser.add_argument("--arrival", type=float, default=None, metavar="S",
                        help="participants arrive uniformly over S seconds (default: the "
                             "longest think time)")
    parser.add_argument("--duplicates", type=float, default=0.05,
                        help="share of messages sent twice with the same idempotency key")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--relevance", default="tfidf")
    parser.add_argument("--workers", type=int, default=None,
                        help="server processes (default: serve's default, one per core)")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="sample the server with py-spy during the run (collapsed stacks "
                             "to FILE) and print where its time went")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results file (default results/load.json)")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="cb-load-")
    url = args.database_url or f"sqlite:///{tmp}/load.sqlite3"
    if url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.begin() as conn:  # a fresh schema, as for a new study
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PACKAGE / "src")}
    log_path = Path(tmp) / "server.log"
    log = log_path.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "communitybots.cli", "serve", str(SURVEY), "--port", str(port),
         "--database-url", url, "--relevance", args.relevance,
         "--rate-limit", str(10 * args.messages),
         # every simulated participant comes from 127.0.0.1: no per-address consent limit
         "--consents-per-address", "0"] + (
            ["--workers", str(args.workers)] if args.workers else []),
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(base, server, timeout=120)
        except RuntimeError as err:
            raise SystemExit(f"server did not start ({err}): {log_path.read_text()[-2000:]}") from None
        warmup = wait_until_idle(server.pid)
        profiler = start_profiler(server.pid, args.profile) if args.profile else None
        cpu_before = cpu_seconds(server.pid)
        load_before = os.getloadavg()[0]
        generator_before = time.process_time()
        latencies, errors, retried, accepted, wall, setup, chat = asyncio.run(
            run_clients(base, args, server.pid))
        generator_cpu = time.process_time() - generator_before
        user_end, system_end = cpu_times(server.pid)
        cpu_end = user_end + system_end
        chat_wall = time.perf_counter() - chat.at
        server_cpu = cpu_end - cpu_before
        if profiler is not None:
            stop_profiler(profiler)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        print(f"server log: {log_path}", file=sys.stderr)
    counts = count_in_database(url)
    expected = args.participants * args.messages
    ms = [1000 * x for x in latencies]
    result = {
        "participants": args.participants, "messages_each": args.messages,
        "think_s": list(args.think), "duplicate_share": args.duplicates,
        "arrival_s": args.think[1] if args.arrival is None else args.arrival,
        "database": url.split(":")[0], "relevance": args.relevance,
        "workers": args.workers or default_workers(),
        "requests": len(ms), "accepted_messages": sum(accepted), "expected_messages": expected,
        "stored_participant_messages": counts["participant_messages"],
        "distinct_client_ids": counts["distinct_client_ids"],
        "stored_bot_messages": counts["bot_messages"], "participants_stored": counts["participants"],
        "lost": expected - counts["participant_messages"],
        "duplicated": counts["participant_messages"] - counts["distinct_client_ids"],
        "errors": len(errors), "error_examples": sorted(set(errors))[:5],
        "transport_retries": len(retried),
        "latency_ms": {"p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1),
                       "p99": round(percentile(ms, 99), 1), "max": round(max(ms), 1),
                       "mean": round(statistics.fmean(ms), 1)} if ms else {},
        "wall_s": round(wall, 1), "throughput_msg_per_s": round(len(ms) / wall, 1),
        "chat_wall_s": round(chat_wall, 1),
        "chat_throughput_msg_per_s": round(len(ms) / max(chat_wall, 1e-9), 1),
        # server CPU per request (landing page, consent, pre-chat questions and tutorial
        # included), and apart: per chat message (every POST /api/messages, repeats
        # included, from the moment all participants finished the pages before the chat)
        # and per request of those pages
        "setup_requests": setup,
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(ms) + setup), 2),
        "server_cpu_ms_per_message": round(1000 * (cpu_end - chat.cpu) / max(1, len(ms)), 2),
        # of which in the kernel (sockets, SQLite's file locks and writes, thread wake-ups)
        "server_system_cpu_ms_per_message": round(
            1000 * (system_end - chat.system_cpu) / max(1, len(ms)), 2),
        "server_cpu_ms_per_setup_request": round(
            1000 * (chat.cpu - cpu_before) / max(1, setup), 2),
        # the load generator's own CPU (this process, on the same cores as the server)
        "generator_cpu_ms_per_request": round(1000 * generator_cpu / max(1, len(ms) + setup), 2),
        "server_warmup_s": round(warmup, 1),
        "cpu_count": os.cpu_count(), "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }
    if args.profile:
        result["profile"] = {"file": args.profile, "share_of_samples": summarise_profile(args.profile)}
    out = Path(args.out) if args.out else HERE / "results" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["errors"] == 0
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
