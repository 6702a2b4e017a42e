"""Every endpoint against the real engine: SmolLM2-135M float32 on CPU behind uvicorn on loopback."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.server.app import create_app
from fms_worker.server.runner import BackgroundServer

pytestmark = pytest.mark.slow


def worker_config(model_dir, **sections) -> WorkerConfig:
    doc = {"model": {"path": str(model_dir), "served_name": "smollm2", "max_model_len": 128},
           "precision": {"dtype": "float32"}, "runtime": {"device": "cpu", "enforce_eager": True},
           "caching": {"num_kv_blocks": 64, "block_size": 16}, "batching": {"max_num_seqs": 8}}
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    return WorkerConfig.model_validate(doc)


@pytest.fixture(scope="module")
def engine(smollm2_dir):
    return LLMEngine(worker_config(smollm2_dir))


@pytest.fixture(scope="module")
def server(smollm2_dir, engine):
    app = create_app(worker_config(smollm2_dir, server={"max_body_bytes": 4096}), engine=engine)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def sse_events(text: str) -> list[dict]:
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    chunks = text.split("\n\n")[:-2]
    assert all(c.startswith("data: ") for c in chunks)
    return [json.loads(c[len("data: "):]) for c in chunks]


def wait_blocks_free(app, timeout=30.0):
    stats = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = app.state.serving.async_engine.stats()
        if stats.num_free_kv_blocks == stats.num_kv_blocks and stats.num_running == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"KV blocks not freed: {stats}")


def test_completion_greedy_matches_engine(client, engine):
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    prompt_ids = engine.tokenizer.encode(body["prompt"])
    assert data["object"] == "text_completion" and data["model"] == "smollm2"
    assert data["usage"]["prompt_tokens"] == len(prompt_ids)
    assert 1 <= data["usage"]["completion_tokens"] <= 4
    assert data["choices"][0]["finish_reason"] in ("stop", "length") and data["choices"][0]["text"]
    # Same request by token ids gives the same greedy text.
    again = client.post("/v1/completions", json={**body, "prompt": prompt_ids}).json()
    assert again["choices"][0]["text"] == data["choices"][0]["text"]


def test_completion_stream_concatenates_to_the_full_text(client):
    body = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "ignore_eos": True}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    r = client.post("/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == full
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5


def test_completion_logprobs(client):
    r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "logprobs": 2, "temperature": 0,
                                             "ignore_eos": True})
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 2 and len(lp["token_logprobs"]) == 2
    assert all(x <= 0 for x in lp["token_logprobs"]) and all(len(t) >= 2 for t in lp["top_logprobs"])


def test_chat_and_chat_stream(client):
    msgs = [{"role": "user", "content": "Say hello."}]
    r = client.post("/v1/chat/completions", json={"model": "smollm2", "messages": msgs, "max_tokens": 4,
                                                  "temperature": 0, "logprobs": True, "top_logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 2
    r = client.post("/v1/chat/completions", json={"messages": msgs, "max_completion_tokens": 4, "temperature": 0,
                                                  "stream": True})
    events = sse_events(r.text)
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert streamed == choice["message"]["content"]


def test_models_health_ready_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert {k: ready.json()[k] for k in ("status", "model", "task", "device", "dtype")} == \
        {"status": "ready", "model": "smollm2", "task": "generate", "device": "cpu", "dtype": "float32"}
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "smollm2" and models["data"][0]["max_model_len"] == 128
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 1})
    text = client.get("/metrics").text
    for name in ("fms_requests_total", "fms_time_to_first_token_seconds_bucket", "fms_kv_cache_usage_ratio",
                 "fms_generation_tokens_total", "fms_step_duration_seconds_count", "fms_batch_size_bucket"):
        assert name in text, name
    success = [ln for ln in text.splitlines() if ln.startswith('fms_requests_total{outcome="success"}')]
    assert float(success[0].split()[-1]) >= 1


@pytest.mark.parametrize("path, body, status, needle", [
    ("/v1/completions", {"prompt": "word " * 200}, 400, "context is 128"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 500}, 400, "max_tokens (500) is too large"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 400, "not served here"),
    ("/v1/completions", {"prompt": "hi", "temperature": "warm"}, 400, "temperature"),
    ("/v1/completions", {"prompt": [99999999]}, 400, "vocabulary"),
    ("/v1/completions", {"prompt": "hi", "n": 9}, 400, "max_num_seqs=8"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, 400, "logprobs"),
    ("/v1/embeddings", {"input": "x"}, 404, "Not Found"),
])
def test_errors(client, path, body, status, needle):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_body_too_large_is_413_and_harmless(client):
    r = client.post("/v1/completions", json={"prompt": "x" * 5000})
    assert r.status_code == 413
    assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_client_disconnect_aborts_and_frees_blocks(server, client):
    body = {"prompt": "Count: one two three", "max_tokens": 100, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("data: ")
        assert server.app.state.serving.async_engine.stats().num_running == 1
    stats = wait_blocks_free(server.app)
    assert stats.num_waiting == 0


def test_queue_full_gets_429(smollm2_dir):
    cfg = worker_config(smollm2_dir, batching={"max_num_seqs": 1, "max_waiting": 1})
    with BackgroundServer(create_app(cfg)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        long = {"prompt": "Tell a story", "max_tokens": 100, "ignore_eos": True, "stream": True}
        with c.stream("POST", "/v1/completions", json=long) as running:
            next(running.iter_lines())  # running now
            with httpx.Client(base_url=srv.url, timeout=120) as c2, \
                    c2.stream("POST", "/v1/completions", json=long) as waiting:
                assert waiting.status_code == 200
                r = c.post("/v1/completions", json={"prompt": "x"})
                assert r.status_code == 429 and r.headers["retry-after"]
                assert r.json()["error"]["type"] == "rate_limit_error"
        wait_blocks_free(srv.app)
        metrics = c.get("/metrics").text
        assert 'fms_requests_total{outcome="rejected"} 1.0' in metrics


def test_api_key_401(smollm2_dir):
    cfg = worker_config(smollm2_dir, server={"api_key": "k3y"})
    with BackgroundServer(create_app(cfg)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        ok = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200
