"""server.keep_alive_s: how long the worker keeps an idle client connection open."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from fms_worker.config import WorkerConfig
from fms_worker.server.runner import _uvicorn_config, free_port


def _idle_seconds_until_closed(keep_alive_s: int, wait: float) -> float | None:
    """Serve one keep-alive request, then time how long the idle connection stays open (None: past `wait`)."""
    app = FastAPI()

    @app.get("/ping")
    def ping():
        return {"ok": True}

    port = free_port("127.0.0.1")
    server = uvicorn.Server(_uvicorn_config(app, "127.0.0.1", port, sockets_timeout=1, keep_alive_s=keep_alive_s,
                                            log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            response = b""
            while not response.endswith(b'{"ok":true}'):
                response += sock.recv(4096)
            assert response.startswith(b"HTTP/1.1 200")
            idle_from = time.monotonic()
            try:
                assert sock.recv(1) == b""  # the server closed its end
            except TimeoutError:
                return None
            return time.monotonic() - idle_from
    finally:
        server.should_exit = True
        thread.join(10)


def test_an_idle_connection_is_closed_after_keep_alive_s():
    closed_after = _idle_seconds_until_closed(keep_alive_s=1, wait=10)
    assert closed_after is not None and 0.5 < closed_after < 3


def test_the_default_outlives_a_typical_balancer_idle_timeout():
    # Proxies in front commonly drop idle upstream connections after 60 s; the worker must not do it first.
    assert WorkerConfig(model={"path": "/m"}).server.keep_alive_s > 60
    assert _idle_seconds_until_closed(keep_alive_s=WorkerConfig(model={"path": "/m"}).server.keep_alive_s,
                                      wait=2.5) is None  # still open after 2.5 s idle
