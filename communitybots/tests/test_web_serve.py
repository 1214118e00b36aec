"""`communitybots serve` as a user runs it: a real uvicorn with two worker processes on
one SQLite file, migrated once before the workers start; a consent and a message go
through, then the server stops on SIGTERM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from live_server import free_port
from web_support import SURVEY

PACKAGE = Path(__file__).resolve().parent.parent


def test_serve_with_two_workers(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "serve.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "communitybots.cli", "serve", str(SURVEY), "--port", str(port),
         "--database-url", f"sqlite:///{db}", "--relevance", "tfidf", "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not answer within 90 s"
            time.sleep(0.3)
        with httpx.Client(base_url=base) as client:
            token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
            assert client.post("/consent", data={"csrf_token": token, "consent": "yes"}).status_code == 303
            for i in range(4):  # served by either worker; the state is in the database
                reply = client.post("/api/messages", headers={"X-CSRF-Token": token},
                                    json={"client_id": f"m{i}", "text": "We cooked at home a lot."})
                assert reply.status_code == 200, reply.text
            assert len([m for m in client.get("/api/session").json()["messages"]
                        if m["role"] == "participant"]) == 4
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert f"participants http://127.0.0.1:{port}/" in output
    assert output.count("Started server process") >= 2  # two workers
