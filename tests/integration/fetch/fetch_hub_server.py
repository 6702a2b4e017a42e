"""A local HTTP server that answers the Hub endpoints huggingface_hub and the fetcher use.

- GET /api/models/<org>/<name>[/revision/<rev>]?blobs=True   model info with siblings (size, blobId, lfs.sha256)
- GET|HEAD /<org>/<name>/resolve/<rev>/<file>                 bytes, with ETag, X-Repo-Commit, X-Linked-Etag,
                                                              X-Linked-Size, Content-Length and Range (206)
Errors as the Hub sends them: 404 + X-Error-Code RepoNotFound / RevisionNotFound,
401 + X-Error-Message "Invalid credentials in Authorization header".
Test knobs: drop the connection once after N bytes of a file, serve a file with a flipped byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_MIN = 1 << 20  # files this size and up are "LFS" (sha256 oid); smaller ones carry a git blob id


@dataclass
class ServedFile:
    size: int
    read: callable  # (start, end) -> bytes
    sha256: str
    git_sha1: str

    @property
    def lfs(self) -> bool:
        return self.size >= LFS_MIN


def _from_disk(path: Path) -> ServedFile:
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            sha256.update(block)
            sha1.update(block)

    def read(start: int, end: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    return ServedFile(path.stat().st_size, read, sha256.hexdigest(), sha1.hexdigest())


def _from_bytes(data: bytes) -> ServedFile:
    return ServedFile(len(data), lambda s, e: data[s:e], hashlib.sha256(data).hexdigest(),
                      hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest())


class FakeHub:
    def __init__(self, repo: str, model_dir: Path, token: str | None = None, extra: dict[str, bytes] | None = None):
        self.repo, self.token = repo, token
        self.files = {p.name: _from_disk(p) for p in sorted(model_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
        self.files.update({k: _from_bytes(v) for k, v in (extra or {}).items()})
        self.refs = {"main": COMMIT, COMMIT: COMMIT}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_once: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def body_requests(self, name: str | None = None) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1] and (name is None or r[1].endswith("/" + name))]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def info(self, commit: str) -> dict:
        siblings = []
        for name, f in self.files.items():
            s = {"rfilename": name, "size": f.size, "blobId": f.git_sha1}
            if f.lfs:
                s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": 134}
            siblings.append(s)
        return {"id": self.repo, "modelId": self.repo, "sha": commit, "private": False, "siblings": siblings}


def _handler(hub: FakeHub):
    info_re = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
    resolve_re = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None = None, message: str | None = None) -> None:
            headers = {"Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            if message:
                headers["X-Error-Message"] = message
            self._send(status, headers, json.dumps({"error": message or code}).encode())

        def _route(self) -> None:
            path = unquote(urlparse(self.path).path)
            with hub.lock:
                hub.requests.append((self.command, path, self.headers.get("Range")))
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._error(401, message="Invalid credentials in Authorization header")
            if m := info_re.match(path):
                repo, rev = m.group(1), m.group(2) or "main"
                if repo != hub.repo:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if rev not in hub.refs:
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                return self._send(200, {"Content-Type": "application/json"}, json.dumps(hub.info(hub.refs[rev])).encode())
            if m := resolve_re.match(path):
                return self._resolve(*m.groups())
            self._error(404, message="no such endpoint")

        def _resolve(self, repo: str, rev: str, name: str) -> None:
            if repo != hub.repo:
                return self._error(404, "RepoNotFound", "Repository not found")
            if rev not in hub.refs:
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            f = hub.files.get(name)
            if f is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            etag = f.sha256 if f.lfs else f.git_sha1
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": hub.refs[rev], "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if f.lfs:
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(f.size)})
            start, end, status = 0, f.size, 200
            if rng := re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", "")):
                start, end, status = int(rng.group(1)), (int(rng.group(2)) + 1 if rng.group(2) else f.size), 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
            headers["Content-Length"] = str(end - start)
            if self.command == "HEAD":
                return self._send(status, headers)
            body = f.read(start, end)
            if name in hub.corrupt and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            with hub.lock:
                drop = hub.drop_once.pop(name, None)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if drop is not None:
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        do_GET = do_HEAD = _route

    return Handler
