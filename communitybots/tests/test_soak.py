"""A short, bounded soak of the real server on loopback (``benchmarks/soak.py``): 20 s of
failed logins with 200 KB usernames, random usernames, 1 MB forms, 30 MB JSON bodies,
consents and messages against two worker processes. The memory stays flat, nothing
answers 500, and no participant text reaches the server log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_soak_memory_stays_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(PACKAGE / "benchmarks" / "soak.py"), "--seconds", "20",
         "--sample", "2", "--attackers", "2", "--floods", "1", "--max-growth-mb", "25",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert out.exists(), run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["growth_mb_after_warmup"] <= 25, result["rss_mb_samples"]
    assert result["server_errors_500"] == 0 and not result["participant_text_in_server_log"]
    requests = result["requests"]
    assert requests.get("long_username 400", 0) > 0 and requests.get("huge_json 413", 0) > 0
    assert requests.get("random_username 429", 0) > 0  # the address is throttled
    assert requests.get("consent 303", 0) <= 20  # per-address consent limit
    assert requests.get("message 200", 0) > 0  # past the pre-chat pages, into the chat
    assert run.returncode == 0, run.stdout + run.stderr
