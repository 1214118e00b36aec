"""Starting `communitybots serve` from another program (tests, the load benchmark):
a free loopback port, and waiting until the server answers."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(base_url: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll ``GET /`` until it answers 200; RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base_url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer within {timeout:g} s")
        time.sleep(0.3)
