"""ASGI middleware: API key and request-size limit, answered before any route runs."""

from __future__ import annotations

import hmac
import json

from fms_worker.server.errors import error_body

# Probes and scrapes carry no credentials; only the API needs the key.
_OPEN_PATHS = ("/health", "/ready", "/metrics")


async def _send_error(send, status: int, message: str, code: str | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class APIKeyMiddleware:
    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            return await _send_error(send, 401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                                     code="invalid_api_key")
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length and by bytes actually received (chunked uploads).

    The body is read up front and replayed to the app; the limit keeps that buffer small.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = f"request body is larger than {self.max_bytes} bytes (server.max_body_bytes); send a smaller one"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(send, 413, too_big, code="request_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client left before sending the body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_error(send, 413, too_big, code="request_too_large")
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: http.disconnect, which streaming uses to notice a gone client

        return await self.app(scope, replay, send)
