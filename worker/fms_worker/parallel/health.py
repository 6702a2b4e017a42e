"""The probes of a group follower pod: it serves no API, but the kubelet still asks /health and /ready.

/health answers 200 while the process lives (it exits with the group);
/ready answers 503 until this pod's ranks have joined the group and loaded
their stages, so the StatefulSet counts the group ready only when it is whole.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FollowerHealth:
    def __init__(self, host: str, port: int):
        self._ready = threading.Event()
        ready = self._ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/health":
                    self._answer(200, {"status": "ok", "role": "follower"})
                elif self.path == "/ready":
                    self._answer(200 if ready.is_set() else 503, {"ready": ready.is_set(), "role": "follower"})
                else:
                    self._answer(404, {"error": {"message": "a pipeline group follower serves only /health and /ready; "
                                                 "send requests to the group leader (pod 0)", "type": "not_found"}})

            def do_POST(self):  # noqa: N802
                self.path = "/v1"  # never a probe: the same 404 that points at the leader
                self.do_GET()

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # probes every few seconds would flood the log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="follower-health", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def set_ready(self) -> None:
        self._ready.set()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
