"""A real uvicorn server on loopback in a background thread, for the browser test and
the load benchmark (stop it and start another on the same port = a server restart)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from communitybots.web.serving import free_port  # noqa: F401  (re-exported for the tests)


class LiveServer:
    def __init__(self, app: FastAPI, port: int):
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.engine.dispose()
