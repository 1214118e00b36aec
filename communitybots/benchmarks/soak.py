"""Soak test of the web platform against abuse, on loopback only, for a bounded time.

Starts ``communitybots serve`` (two worker processes by default) on a fresh database, holds
a few whole conversations (consent, pre-chat questions, tutorial, two messages: each
worker's first chat turns then fall in no sample) and, for ``--seconds``, keeps sending
what an attacker sends: failed logins with 200 KB
usernames (refused before anything is stored), failed logins with a new random username
each time (counted per address and account in the database), 1 MB login forms and 30 MB
JSON bodies (refused by the body cap), consents (limited per address) and chat messages
from the sessions that got one. Every ``--sample`` seconds it records the resident
memory (RSS) of the server's processes. The memory must stay flat: the growth from the
end of the warm-up (the first quarter) to the end is reported and checked against
``--max-growth-mb``.

    python benchmarks/soak.py                        # 120 s, SQLite, 2 workers
    python benchmarks/soak.py --seconds 600 --database-url postgresql+psycopg://...
    python benchmarks/soak.py --src /old/checkout/communitybots/src   # another version

Writes ``benchmarks/results/soak.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from communitybots.spec import load_survey
from communitybots.web.serving import free_port, wait_until_serving

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import BEFORE_CHAT, form_answers  # noqa: E402  (the load benchmark's page walk)

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
SURVEY = PACKAGE / "src" / "communitybots" / "surveys" / "covid_daily_life.yaml"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB (Linux /proc)."""
    total_kb = 0
    pids = {pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                pids.add(int(entry.name))
        except OSError:
            continue
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def _token(client: httpx.Client, path: str = "/") -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text).group(1)


def attacker(base: str, stop: threading.Event, statuses: Counter, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=60) as client:
        token = _token(client, "/admin/login")
        kinds = ["long_username", "random_username", "huge_form", "huge_json"]
        while not stop.is_set():
            kind = rng.choice(kinds)
            try:
                if kind == "long_username":
                    name = "".join(rng.choices(string.ascii_letters, k=200_000))
                    r = client.post("/admin/login", data={"csrf_token": token, "username": name,
                                                          "password": "guess guess"})
                elif kind == "random_username":
                    name = "".join(rng.choices(string.ascii_lowercase, k=12))
                    r = client.post("/admin/login", data={"csrf_token": token, "username": name,
                                                          "password": "Password1"})
                elif kind == "huge_form":
                    r = client.post("/admin/login", data={"csrf_token": token, "username": "x" * 1_000_000,
                                                          "password": "p"})
                else:
                    r = client.post("/api/messages", content=b"[" + b"0," * 15_000_000 + b"0]",
                                    headers={"content-type": "application/json",
                                             "X-CSRF-Token": token})
                statuses[f"{kind} {r.status_code}"] += 1
            except httpx.HTTPError as err:
                statuses[f"{kind} {type(err).__name__}"] += 1
                client.close()
                client = httpx.Client(base_url=base, timeout=60)
                token = _token(client, "/admin/login")


#: answers to the shipped survey's pre-chat questions (the server asks for them when its
#: survey has them; a server of an older version goes straight to the chat)
PRE_ANSWERS = form_answers(load_survey(SURVEY).pre_survey)


def walk_to_chat(client: httpx.Client, token: str, page: str, statuses: Counter) -> str:
    """Through the pre-chat questions and the tutorial (when the survey has them) to the
    chat; the page reached ("/chat" unless a step was refused)."""
    while page in BEFORE_CHAT:
        fields = {"csrf_token": token, **(PRE_ANSWERS if page == "/pre" else {})}
        step = client.post(page, data=fields)
        statuses[f"{page} {step.status_code}"] += 1
        page = step.headers.get("location", "/chat") if step.status_code == 303 else ""
    return page


def warm_up(base: str, workers: int, statuses: Counter) -> None:
    """A few whole conversations before the measurement starts, so that each worker's
    first chat turns (the NLU's and the CTM's first allocations) fall in no sample."""
    for _ in range(2 * workers):
        with httpx.Client(base_url=base, timeout=60) as client:
            token = _token(client)
            r = client.post("/consent", data={"csrf_token": token, "consent": "yes"})
            statuses[f"warm-up consent {r.status_code}"] += 1
            if r.status_code != 303:
                continue
            if walk_to_chat(client, token, r.headers.get("location", "/chat"), statuses) == "/chat":
                for text in ("We cooked at home.", "I walked the dog every day."):
                    m = client.post("/api/messages", headers={"X-CSRF-Token": token}, json={
                        "client_id": uuid.uuid4().hex, "kind": "message", "text": text})
                    statuses[f"warm-up message {m.status_code}"] += 1


def participant_flood(base: str, stop: threading.Event, statuses: Counter, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        with httpx.Client(base_url=base, timeout=60) as client:
            try:
                token = _token(client)
                r = client.post("/consent", data={"csrf_token": token, "consent": "yes"})
                statuses[f"consent {r.status_code}"] += 1
                if r.status_code != 303:
                    time.sleep(0.2)
                    continue
                page = walk_to_chat(client, token, r.headers.get("location", "/chat"), statuses)
                for _ in range(rng.randint(3, 8) if page == "/chat" else 0):
                    if stop.is_set():
                        break
                    m = client.post("/api/messages", headers={"X-CSRF-Token": token}, json={
                        "client_id": uuid.uuid4().hex, "kind": "message",
                        "text": rng.choice(["We cooked at home.", "\u202eevil", "nul\x00here",
                                            "x" * 1999, "I walked the dog every day."])})
                    statuses[f"message {m.status_code}"] += 1
            except httpx.HTTPError as err:
                statuses[f"participant {type(err).__name__}"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--attackers", type=int, default=3, help="threads of login/body abuse")
    parser.add_argument("--floods", type=int, default=2, help="threads of consents + messages")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--src", default=str(PACKAGE / "src"),
                        help="the communitybots source folder to serve (default: this one)")
    parser.add_argument("--max-growth-mb", type=float, default=25.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="cb-soak-")
    url = args.database_url or f"sqlite:///{tmp}/soak.sqlite3"
    if url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": args.src}
    log_path = Path(tmp) / "server.log"
    log = log_path.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "communitybots.cli", "serve",
         str(Path(args.src) / "communitybots" / "surveys" / SURVEY.name), "--port", str(port),
         "--database-url", url, "--relevance", "tfidf", "--workers", str(args.workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    statuses: Counter = Counter()
    samples: list[tuple[float, float]] = []
    try:
        try:
            wait_until_serving(base, server, timeout=120)
        except RuntimeError as err:
            raise SystemExit(f"server did not start ({err}): {log_path.read_text()[-2000:]}") from None
        warm_up(base, args.workers, statuses)
        stop = threading.Event()
        threads = [threading.Thread(target=attacker, args=(base, stop, statuses, i))
                   for i in range(args.attackers)]
        threads += [threading.Thread(target=participant_flood, args=(base, stop, statuses, 100 + i))
                    for i in range(args.floods)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - t0 < args.seconds:
            samples.append((round(time.monotonic() - t0, 1), round(rss_mb(server.pid), 1)))
            time.sleep(args.sample)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        samples.append((round(time.monotonic() - t0, 1), round(rss_mb(server.pid), 1)))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    server_log = log_path.read_text(errors="replace")
    warm = samples[max(0, len(samples) // 4)][1]
    result = {
        "seconds": args.seconds, "workers": args.workers, "database": url.split(":")[0],
        "src": args.src, "requests": dict(sorted(statuses.items())),
        "rss_mb_samples": samples, "rss_mb_after_warmup": warm, "rss_mb_end": samples[-1][1],
        "growth_mb_after_warmup": round(samples[-1][1] - warm, 1),
        "server_errors_500": sum(v for k, v in statuses.items() if k.endswith(" 500")),
        "participant_text_in_server_log": "evil" in server_log or "nul" in server_log
                                          or "walked the dog" in server_log,
        "cpu_count": os.cpu_count(), "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }
    out = Path(args.out) if args.out else HERE / "results" / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb_samples"}, indent=2))
    ok = (result["growth_mb_after_warmup"] <= args.max_growth_mb
          and result["server_errors_500"] == 0 and not result["participant_text_in_server_log"])
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
