"""A real Flower federation on loopback: a SuperLink and two SuperNodes started here,
`flwr run` on the project `fedtune flower app` writes, metrics equal to in-process.

Flower 1.42 starts a fresh `flwr-clientapp` process for every message (Python, torch and
the data load each time), so this takes minutes on a 2-core machine: it runs only with
FEDTUNE_FLOWER_DEPLOYMENT=1. The Flower simulation tests in test_flower.py run always.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")
if os.environ.get("FEDTUNE_FLOWER_DEPLOYMENT") != "1":
    pytest.skip("a real SuperLink and SuperNodes take minutes here; set FEDTUNE_FLOWER_DEPLOYMENT=1", allow_module_level=True)

BIN = Path(sys.executable).parent
EXPERIMENT = """
name = "tiny"
seed = 3
rounds = 2
clients_per_round = 3
[data]
name = "digits"
num_clients = 4
partition = "dirichlet"
alpha = 0.5
[model]
name = "mlp"
options = {hidden = [32]}
[algorithm]
name = "fedavg"
batch_size = 16
lr = 0.3
[eval]
every = 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port}")


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in path.read_text().splitlines()]


CASES = {
    "fedavg": [],
    "spry-per-epoch": ['algorithm={name="spry", batch_size=16, lr=1e-3, max_steps=5}', 'server={name="fedyogi", lr=0.01}'],
    "spry-per-iteration": [
        'algorithm={name="spry", batch_size=16, lr=1e-3, max_steps=5, communication="per_iteration"}',
        'server={name="fedyogi", lr=0.01}',
    ],
}


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A SuperLink and two SuperNodes (partitions 0-1 and 2-3) on loopback; yields the environment for `flwr`."""
    root = tmp_path_factory.mktemp("federation")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FLWR_HOME": str(root / "home"), "FLWR_TELEMETRY_ENABLED": "0"}
    (root / "home").mkdir()
    link = free_port()
    (root / "home" / "config.toml").write_text(f'[superlink]\ndefault = "here"\n[superlink.here]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    procs = []
    try:
        log = (root / "superlink.log").open("w")
        procs.append(subprocess.Popen(
            ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(link),
             "--control-api-address", f"127.0.0.1:{free_port()}", "--database", str(root / "link.db")],
            env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(link)
        for i, ids in enumerate(['"0-1"', '"2-3"']):
            node_log = (root / f"supernode{i}.log").open("w")
            procs.append(subprocess.Popen(
                ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}", "--host", "127.0.0.1", "--port", str(free_port()),
                 "--node-config", f"partition-ids={ids}"],
                env=env, stdout=node_log, stderr=subprocess.STDOUT))
        yield env
    finally:
        for proc in procs:  # the SuperNodes' SuperExec children watch their parent and exit with it
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(root / "home", ignore_errors=True)


@pytest.mark.parametrize("case", list(CASES))
def test_flwr_run_on_a_superlink_with_two_supernodes_equals_inprocess(federation, tmp_path, case):
    (tmp_path / "exp.toml").write_text(EXPERIMENT)
    sets = [arg for value in CASES[case] for arg in ("--set", value)]
    fedtune = str(BIN / "fedtune")
    local = ["--set", f'output="{tmp_path / "local"}"']
    subprocess.run([fedtune, "run", str(tmp_path / "exp.toml"), *sets, *local], check=True, env=federation, capture_output=True)
    app = [fedtune, "flower", "app", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "app"), *sets]
    subprocess.run([*app, "--set", f'output="{tmp_path / "flower"}"'], check=True, env=federation, capture_output=True)
    run = subprocess.run(["flwr", "run", str(tmp_path / "app"), "here", "--stream"], env=federation, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert metrics(tmp_path / "flower" / "metrics.jsonl") == metrics(tmp_path / "local" / "metrics.jsonl")
