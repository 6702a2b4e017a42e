"""POST /v1/embeddings on all-MiniLM-L6-v2 against sentence-transformers, batching, cache, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil

import httpx
import numpy as np
import pytest

from encoder_fixtures import encoder_app, loaded, make_service

SENTENCES = [
    "The cat sits on the mat.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons, mediated by eight gluons "
    "and characterised by asymptotic freedom at high energies and confinement at low energies.",
    "ok",
    "Embeddings map text to vectors; similar meanings end up close together in the vector space.",
    "¿Dónde está la biblioteca? 图书馆在哪里?",
]


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def post(service, path, body=None, **kw):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=encoder_app(service)), base_url="http://t") as c:
        return await c.post(path, json=body, **kw) if body is not None else await c.post(path, **kw)


def vectors(resp) -> list[np.ndarray]:
    assert resp.status_code == 200, resp.text
    return [np.array(d["embedding"], dtype=np.float32) for d in resp.json()["data"]]


async def test_embeddings_match_sentence_transformers_in_one_mixed_length_batch(minilm_loaded, st_model):
    service = make_service(minilm_loaded)
    resp = await post(service, "/v1/embeddings", {"model": "m", "input": SENTENCES})
    await service.close()
    expected = st_model.encode(SENTENCES, convert_to_numpy=True)
    got = vectors(resp)
    assert len(got) == len(SENTENCES)
    for g, e in zip(got, expected):
        assert cosine(g, e) > 1 - 1e-4
    body = resp.json()
    assert [d["index"] for d in body["data"]] == list(range(len(SENTENCES)))
    tokens = sum(len(ids) for ids in st_model.tokenizer(SENTENCES)["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


async def test_sixteen_concurrent_requests_are_batched_and_each_gets_its_own_result(minilm_loaded, st_model):
    service = make_service(minilm_loaded, max_batch_size=16, max_queue_delay_s=2.0)
    texts = [f"request number {i} talks about {'apples' if i % 2 else 'the ocean tides'}" for i in range(16)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=encoder_app(service)), base_url="http://t") as c:
        resps = await asyncio.gather(*(c.post("/v1/embeddings", json={"input": t}) for t in texts))
    await service.close()
    registry = service.observer.registry
    batches = registry.get_sample_value("fms_encoder_batch_size_count")
    inputs = registry.get_sample_value("fms_encoder_batch_size_sum")
    assert inputs == 16 and batches < 16  # some batch held more than one request
    assert registry.get_sample_value("fms_encoder_batch_size_bucket", {"le": "1.0"}) < batches
    assert registry.get_sample_value("fms_requests_total", {"outcome": "success"}) == 16
    assert registry.get_sample_value("fms_encoder_queue_delay_seconds_count") == 16
    expected = st_model.encode(texts, convert_to_numpy=True)
    for resp, e in zip(resps, expected):
        (got,) = vectors(resp)
        assert cosine(got, e) > 1 - 1e-4


async def test_base64_and_token_id_inputs(minilm_loaded, st_model):
    service = make_service(minilm_loaded)
    ids = st_model.tokenizer(SENTENCES[:2])["input_ids"]
    floats = vectors(await post(service, "/v1/embeddings", {"input": SENTENCES[:2]}))
    b64 = await post(service, "/v1/embeddings", {"input": ids, "encoding_format": "base64"})
    one = vectors(await post(service, "/v1/embeddings", {"input": ids[0]}))
    await service.close()
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64.json()["data"]]
    for f, d in zip(floats, decoded):
        np.testing.assert_allclose(f, d, atol=1e-6)
    np.testing.assert_allclose(one[0], floats[0], atol=1e-6)


async def test_too_long_input_is_refused_unless_truncate(minilm_loaded, st_model):
    service = make_service(minilm_loaded)
    long_text = " ".join(["word"] * 400)
    refused = await post(service, "/v1/embeddings", {"input": ["fine", long_text]})
    cut = await post(service, "/v1/embeddings", {"input": long_text, "truncate": True})
    await service.close()
    assert refused.status_code == 400
    err = refused.json()["error"]
    assert err["param"] == "input" and "input[1]" in err["message"] and "truncate" in err["message"]
    assert cosine(vectors(cut)[0], st_model.encode([long_text])[0]) > 1 - 1e-4  # ST truncates to 256 too


@pytest.mark.parametrize("body, status, needle", [
    ({"input": []}, 400, "empty"),
    ({"input": [""]}, 400, "empty string"),
    ({"input": 5}, 400, "list of strings"),
    ({"input": [["a"]]}, 400, "list of strings"),
    ({"input": [[]]}, 400, "empty token list"),
    ({"input": [[1, 99999999]]}, 400, "outside"),
    ({"input": "x", "dimensions": 100}, 400, "not trained for shortened"),
    ({"input": "x", "dimensions": 0}, 400, "between 1 and 384"),
    ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "x", "temperature": 1}, 400, "temperature"),
    ({"input": "x", "model": "other"}, 404, "does not exist"),
])
async def test_bad_requests_get_clear_errors(minilm_loaded, body, status, needle):
    service = make_service(minilm_loaded)
    resp = await post(service, "/v1/embeddings", body)
    ok = await post(service, "/v1/embeddings", {"input": "still served"})
    await service.close()
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]
    assert ok.status_code == 200  # a bad request disturbs no one


async def test_invalid_json_body(minilm_loaded):
    service = make_service(minilm_loaded)
    resp = await post(service, "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    await service.close()
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]


async def test_result_cache_hits_are_counted_and_identical(minilm_loaded):
    service = make_service(minilm_loaded, result_cache_size=8)
    first = vectors(await post(service, "/v1/embeddings", {"input": ["alpha", "beta"]}))
    second = vectors(await post(service, "/v1/embeddings", {"input": ["beta", "gamma"]}))
    await service.close()
    reg = service.observer.registry
    assert reg.get_sample_value("fms_result_cache_queries_total") == 4
    assert reg.get_sample_value("fms_result_cache_hits_total") == 1
    assert reg.get_sample_value("fms_encoder_batch_size_sum") == 3  # "beta" ran once
    np.testing.assert_array_equal(first[1], second[0])


async def test_timeout_gives_408_and_full_queue_gives_503(minilm_loaded):
    slow = make_service(minilm_loaded, max_batch_size=64, max_queue_delay_s=30.0, request_timeout_s=0.05)
    timed_out = await post(slow, "/v1/embeddings", {"input": "waits for a batch that never fills"})
    await slow.close()
    assert timed_out.status_code == 408 and "request_timeout_s" in timed_out.json()["error"]["message"]
    assert slow.observer.registry.get_sample_value("fms_requests_total", {"outcome": "abort"}) == 1

    full = make_service(minilm_loaded, max_batch_size=64, max_queue_delay_s=30.0, max_waiting=1)
    busy = await post(full, "/v1/embeddings", {"input": ["one", "two"]})
    await full.close()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert full.batcher.num_waiting == 0  # the admitted half was withdrawn


async def test_matryoshka_dimensions_truncate_and_renormalize(minilm_dir, tmp_path):
    for f in minilm_dir.iterdir():
        if f.is_file() and f.name != "config.json":
            (tmp_path / f.name).symlink_to(f)
    shutil.copytree(minilm_dir / "1_Pooling", tmp_path / "1_Pooling")
    cfg = json.loads((minilm_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "matryoshka_dimensions": [128, 384]}))
    service = make_service(loaded(tmp_path, "embed"))
    full = vectors(await post(service, "/v1/embeddings", {"input": "nested"}))[0]
    short = vectors(await post(service, "/v1/embeddings", {"input": "nested", "dimensions": 128}))[0]
    refused = await post(service, "/v1/embeddings", {"input": "nested", "dimensions": 100})
    await service.close()
    assert short.shape == (128,)
    np.testing.assert_allclose(short, full[:128] / np.linalg.norm(full[:128]), atol=1e-6)
    assert refused.status_code == 400 and "[128, 384]" in refused.json()["error"]["message"]
