"""SIGTERM drain of a real `fms-worker serve` process: in-flight finishes, new work gets 503, exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from fms_worker.server.runner import free_port

pytestmark = pytest.mark.slow


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("worker never became ready")


def _stream(url: str, body: dict, on_first_line) -> list[str]:
    """A streaming completion's SSE lines, calling `on_first_line` when the first arrives."""
    lines: list[str] = []
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line:
                lines.append(line)
                if len(lines) == 1:
                    on_first_line()
    return lines


def _final_event(lines: list[str]) -> dict:
    assert lines[-1] == "data: [DONE]"
    return json.loads(lines[-2][len("data: "):])


@contextlib.contextmanager
def _serving(model_dir, tmp_path, *flags: str, env: dict | None = None):
    """`fms-worker serve` as its own process on a free port, ready; killed if the test leaves it running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fms_worker.cli", "serve", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--device", "cpu", "--enforce-eager", "--max-model-len", "128",
           "--num-kv-blocks", "32", "--log-level", "warning", *flags]
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, proc)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "worker.log").read_text()[-3000:])


def test_sigterm_drains(smollm2_dir, tmp_path):
    metrics_port = free_port()
    env = {**os.environ, "FMS_TERMINATION_LOG": str(tmp_path / "termination-log")}
    with _serving(smollm2_dir, tmp_path, "--drain-seconds", "60", "--metrics-port", str(metrics_port),
                  env=env) as (proc, url):
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scrape.status_code == 200 and "fms_kv_cache_usage_ratio" in scrape.text
        first_chunk = threading.Event()
        result: dict = {}

        def in_flight() -> None:
            body = {"prompt": "Count slowly:", "max_tokens": 12, "ignore_eos": True, "stream": True}
            result["lines"] = _stream(url, body, first_chunk.set)

        t = threading.Thread(target=in_flight)
        t.start()
        assert first_chunk.wait(60)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=30)
        assert late.status_code == 503 and late.headers["retry-after"]
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 503
        t.join(120)
        assert _final_event(result["lines"])["choices"][0]["finish_reason"] == "length"
        assert proc.wait(60) == 0
    assert not (tmp_path / "termination-log").exists()


def test_drain_timeout_cuts_off_and_still_exits_0(smollm2_dir, tmp_path):
    with _serving(smollm2_dir, tmp_path, "--drain-seconds", "0") as (proc, url):
        body = {"prompt": "Count slowly:", "max_tokens": 100, "ignore_eos": True, "stream": True}
        lines = _stream(url, body, lambda: proc.send_signal(signal.SIGTERM))
        assert _final_event(lines)["choices"][0]["finish_reason"] == "abort"
        assert len(lines) < 100  # cut off, not run to max_tokens
        assert proc.wait(60) == 0
