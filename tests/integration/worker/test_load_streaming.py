"""64 concurrent streaming clients against the real engine on CPU: no errors, no leaked KV blocks."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from fms_worker.config import WorkerConfig
from fms_worker.server.app import create_app
from fms_worker.server.runner import BackgroundServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENTS = 64
MAX_TOKENS = 4


async def _stream_one(client: httpx.AsyncClient, i: int) -> tuple[int, str]:
    body = {"prompt": f"Request number {i} says", "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True,
            "temperature": 0.8, "seed": i, "stream_options": {"include_usage": True}}
    text = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert "error" not in events[-1]
    for e in events[:-1]:
        text.append(e["choices"][0]["text"])
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    return events[-1]["usage"]["completion_tokens"], "".join(text)


async def _run_clients(url: str) -> list:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        return await asyncio.gather(*(_stream_one(client, i) for i in range(CLIENTS)))


def test_64_concurrent_streams(smollm2_dir):
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(smollm2_dir), "max_model_len": 128}, "precision": {"dtype": "float32"},
        "runtime": {"device": "cpu", "enforce_eager": True},
        "caching": {"num_kv_blocks": 160, "block_size": 16},
        "batching": {"max_num_seqs": CLIENTS, "max_waiting": CLIENTS},
    })
    app = create_app(cfg)
    with BackgroundServer(app) as srv:
        started = time.monotonic()
        results = asyncio.run(_run_clients(srv.url))
        elapsed = time.monotonic() - started
        assert [n for n, _ in results] == [MAX_TOKENS] * CLIENTS
        assert all(text for _, text in results)
        engine = app.state.serving.async_engine
        deadline = time.monotonic() + 30
        while engine.stats().num_running and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = engine.stats()
        assert stats.num_free_kv_blocks == stats.num_kv_blocks, stats
        assert stats.num_running == 0 and stats.num_waiting == 0
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert f'fms_requests_total{{outcome="success"}} {float(CLIENTS)}' in metrics
        print(f"{CLIENTS} streams x {MAX_TOKENS} tokens in {elapsed:.1f}s "
              f"({CLIENTS * MAX_TOKENS / elapsed:.1f} tok/s); thread count {threading.active_count()}")
