"""Run the app under uvicorn with a graceful drain.

On SIGTERM (Kubernetes deleting the pod) the worker keeps its sockets open so the
requests that still reach it during endpoint removal get a clean 503, /ready turns
503, in-flight requests get server.drain_seconds to finish, the rest are aborted,
and the process exits 0. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from fms_worker.config import WorkerConfig
from fms_worker.server.app import create_app, create_metrics_app
from fms_worker.server.state import ServingState

log = logging.getLogger(__name__)


class _DrainingServer(uvicorn.Server):
    """uvicorn.Server whose signals start a drain instead of closing the listener at once."""

    def __init__(self, config: uvicorn.Config, state: ServingState, others: list[uvicorn.Server]):
        super().__init__(config)
        self.state = state
        self.others = others  # e.g. the metrics-port server, stopped together with this one
        self._drain_task: asyncio.Task | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Unlike uvicorn's, this does not re-raise the signal afterwards: a drained worker exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_drain, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def request_drain(self, sig: int = signal.SIGTERM) -> None:
        if self._drain_task is not None:
            log.warning("second signal %s: stopping now", sig)
            self.exit_now()
            return
        log.info("signal %s: draining for up to %ss", sig, self.state.config.server.drain_seconds)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        aborted = await self.state.drain()
        log.info("drained; aborted %d request(s)", aborted)
        self.exit_now()

    def exit_now(self) -> None:
        for server in (self, *self.others):
            server.should_exit = True


def _uvicorn_config(app: FastAPI, host: str, port: int, *, sockets_timeout: float, keep_alive_s: int,
                    log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=int(sockets_timeout) + 1, timeout_keep_alive=keep_alive_s)


def serve(config: WorkerConfig, *, on_fatal: Callable[[str], None] | None = None,
          engine_factory: Callable[[WorkerConfig], Any] | None = None, log_level: str = "info") -> int:
    """Serve until drained. Returns the exit code: 0 after a drain, 1 when the model failed to load."""
    app = create_app(config, engine_factory=engine_factory)
    return asyncio.run(_serve(app, config, on_fatal, log_level))


async def _serve(app: FastAPI, config: WorkerConfig, on_fatal: Callable[[str], None] | None,
                 log_level: str) -> int:
    state: ServingState = app.state.serving
    others: list[uvicorn.Server] = []
    if config.server.metrics_port is not None and config.server.metrics_port != config.server.port:
        metrics_server = uvicorn.Server(_uvicorn_config(create_metrics_app(app), config.server.host,
                                                        config.server.metrics_port, sockets_timeout=1,
                                                        keep_alive_s=config.server.keep_alive_s,
                                                        log_level=log_level))
        metrics_server.capture_signals = contextlib.nullcontext  # the main server owns the signals
        others.append(metrics_server)
    server = _DrainingServer(_uvicorn_config(app, config.server.host, config.server.port,
                                             sockets_timeout=config.server.drain_seconds,
                                             keep_alive_s=config.server.keep_alive_s, log_level=log_level),
                             state, others)
    failed: list[str] = []

    def fatal(message: str) -> None:
        failed.append(message)
        if on_fatal is not None:
            on_fatal(message)
        server.exit_now()

    state.on_fatal = fatal
    state.freeze_after_load = True
    await asyncio.gather(server.serve(), *(s.serve() for s in others))
    return 1 if failed else 0


class BackgroundServer:
    """The app on a free loopback port in a thread (tests and bench/serving.py)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None):
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="fms-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + ready_timeout
        state: ServingState = self.app.state.serving
        while not (self.server.started and state.phase in ("ready", "failed")):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server did not become ready (phase {state.phase}, error {state.error})")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
