"""The encoder routes through the real create_app: lifespan loads MiniLM, /ready turns 200, /v1/embeddings answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from fms_worker.config import WorkerConfig
from fms_worker.server.app import create_app


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = await client.get("/ready")
        if resp.status_code == 200:
            return resp.json()
        assert resp.json().get("status") != "failed", resp.text
        await asyncio.sleep(0.2)
    raise AssertionError("encoder never became ready")


@pytest.fixture
async def client(minilm_dir):
    config = WorkerConfig.model_validate({
        "model": {"path": str(minilm_dir), "task": "embed", "served_name": "minilm"},
        "precision": {"dtype": "float32"},
        "runtime": {"device": "cpu", "enforce_eager": True},
        "batching": {"max_batch_size": 8, "max_queue_delay_us": 1000},
    })
    app = create_app(config)
    async with app.router.lifespan_context(app):  # what uvicorn runs: load in the background, stop on exit
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            await _wait_ready(c)
            yield c


async def test_embeddings_through_create_app(client, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = ["served through the real app", "second input"]
    resp = await client.post("/v1/embeddings", json={"model": "minilm", "input": texts})
    assert resp.status_code == 200, resp.text
    got = np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert (cos > 1 - 1e-4).all()
    bad = await client.post("/v1/embeddings", json={"model": "minilm", "input": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


async def test_encoder_metrics_on_app_metrics(client):
    assert (await client.post("/v1/embeddings", json={"input": "count me"})).status_code == 200
    text = (await client.get("/metrics")).text
    assert "fms_encoder_batch_size_count 1.0" in text
    assert 'fms_requests_total{outcome="success"} 1.0' in text
