"""The HTTP app over the fake engine (real uvicorn on loopback): shapes, streaming, error mapping."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import FakeEngine
from fms_worker.config import WorkerConfig
from fms_worker.server.app import create_app
from fms_worker.server.runner import BackgroundServer


def _config(tmp_path, **server) -> WorkerConfig:
    return WorkerConfig(model={"path": str(tmp_path), "served_name": "fake"}, server=server,
                        batching={"max_waiting": 2})


@pytest.fixture
def served(tmp_path):
    engine = FakeEngine(step_seconds=0.001)
    with BackgroundServer(create_app(_config(tmp_path, max_body_bytes=2048), engine=engine)) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            yield client, engine, srv


def sse_events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n")
    return [json.loads(chunk[len("data: "):]) for chunk in text.split("\n\n")[:-2]]


def test_completion(served):
    client, _, _ = served
    r = client.post("/v1/completions", json={"model": "fake", "prompt": ["ab", "c"], "max_tokens": 3, "n": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["text"] for c in body["choices"]] == ["abc", "abc"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert body["choices"][0]["finish_reason"] == "length"


def test_completion_stream_with_usage_and_echo(served):
    client, _, _ = served
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "stream": True, "echo": True,
                                             "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "hiabcd"
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4


def test_chat_and_chat_stream(served):
    client, _, _ = served
    msgs = [{"role": "user", "content": "hello"}]
    body = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 2}).json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {"role": "assistant",
                                                                                    "content": "ab"}
    events = sse_events(client.post("/v1/chat/completions",
                                    json={"messages": msgs, "max_completion_tokens": 3, "stream": True}).text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["a", "b", "c"]
    assert events[-1]["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("body, message", [
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "model": "nope"}, "not served"),
    ({"prompt": "x", "frobnicate": 1}, "frobnicate"),
    ({}, "prompt"),
])
def test_bad_requests_are_openai_400s(served, body, message):
    client, _, _ = served
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error"


def test_broken_json_404_405(served):
    client, _, _ = served
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/completions").status_code == 405


def test_body_limit_by_length_and_by_stream(served):
    client, _, _ = served
    big = json.dumps({"prompt": "x" * 4000}).encode()
    r = client.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: chunked transfer encoding
        yield big[:1000]
        yield big[1000:]

    r = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200


def test_probes_models_metrics(served):
    client, _, _ = served
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model"] == "fake" and ready.json()["task"] == "generate"
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake"
    client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    text = client.get("/metrics").text
    assert 'fms_requests_total{outcome="success"} 1.0' in text


def test_queue_full_gets_429(served):
    client, engine, srv = served
    engine.max_num_seqs = 1
    engine.step_seconds = 0.01
    with httpx.Client(base_url=srv.url, timeout=30) as other:
        streams = [other.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 500, "stream": True})
                   for _ in range(3)]
        responses = [s.__enter__() for s in streams]  # 1 running + 2 waiting = max_waiting
        try:
            assert [r.status_code for r in responses] == [200, 200, 200]
            r = client.post("/v1/completions", json={"prompt": "x"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
        finally:
            for s in streams:
                s.__exit__(None, None, None)
    deadline = time.monotonic() + 5
    while engine.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.requests  # closing the streams aborted all three


def test_api_key(tmp_path):
    app = create_app(_config(tmp_path, api_key="sekret"), engine=FakeEngine())
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as client:
        assert client.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        wrong = client.post("/v1/completions", json={"prompt": "x"}, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        ok = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1},
                         headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        assert client.get("/ready").status_code == 200  # probes stay open
