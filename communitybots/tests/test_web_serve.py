"""`communitybots serve` as a user runs it: a real uvicorn with two worker processes on
one SQLite file, migrated once before the workers start; a consent and a message go
through, then the server stops on SIGTERM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from web_support import SURVEY

from communitybots.web.serving import free_port, wait_until_serving

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
        try:
            wait_until_serving(base, server, timeout=90)
        except RuntimeError as err:
            output = server.stdout.read().decode() if server.poll() is not None else ""
            raise AssertionError(f"{err}\n{output}") from None
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
