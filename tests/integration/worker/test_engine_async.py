"""Overlapped (async) scheduling gives exactly what step-by-step scheduling gives, on real SmolLM2 weights.

The async engine schedules step N+1 before step N's tokens reach the host; on CPU
the overlap buys nothing, but the bookkeeping (in-flight tokens read from the
device, late stops, dropped tokens, preemption and aborts mid-flight) is the same
code the GPU runs, so CI checks it here against the synchronous engine.
"""

from __future__ import annotations

import pytest

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

TEXTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):",
    "List three colors:",
    "Q: What is 2 + 2?\nA:",
    "Hello",
    "A haiku about autumn:\n",
    "SELECT name FROM users WHERE",
]


def make_engine(model_dir, mode: str, num_kv_blocks: int = 128) -> LLMEngine:
    return LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model_dir)},
        "precision": {"dtype": "float32"},
        "runtime": {"device": "cpu", "async_scheduling": mode},
        "batching": {"max_num_batched_tokens": 64, "max_num_seqs": 16},
        "caching": {"num_kv_blocks": num_kv_blocks, "block_size": 16},
    }))


@pytest.fixture(scope="module")
def engines(smollm2_dir):
    return make_engine(smollm2_dir, "off"), make_engine(smollm2_dir, "on")


@pytest.fixture(scope="module")
def prompts(engines):
    tok = engines[0].tokenizer
    return [tok(t)["input_ids"] for t in TEXTS]


def run(engine: LLMEngine, prompts, params) -> tuple[list, int]:
    """Outputs in prompt order, and the number of tokens the model computed."""
    computed = 0
    ids = [f"r{i}" for i in range(len(prompts))]
    for rid, p, sp in zip(ids, prompts, params):
        engine.add_request(rid, p, sp)
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
        computed += engine.stats().last_batch_tokens
    assert set(done) == set(ids)
    pool = engine.scheduler.kv.pool
    assert pool.num_free == pool.num_blocks, "blocks leaked"
    return [done[r] for r in ids], computed


def summary(outs) -> list:
    return [[(c.token_ids, c.text, c.finish_reason, c.stop_reason, c.logprobs) for c in o.outputs] for o in outs]


def test_async_is_on_only_where_asked(engines):
    sync, overlapped = engines
    assert not sync.async_scheduling and overlapped.async_scheduling


def test_greedy_with_eos_stops_and_lengths_is_identical(engines, prompts):
    params = [SamplingParams(temperature=0.0, max_tokens=6 + 5 * i) for i in range(len(prompts))]
    params[1] = SamplingParams(temperature=0.0, max_tokens=40, stop=[","])
    params[2] = SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=[198])  # newline
    params[3] = SamplingParams(temperature=0.0, max_tokens=20, logprobs=3)
    a, _ = run(engines[0], prompts, params)
    b, _ = run(engines[1], prompts, params)
    assert summary(a) == summary(b)
    assert {o.outputs[0].finish_reason for o in a} >= {"stop", "length"}  # both kinds of late stop happened


def test_sampling_n_seeds_and_penalties_are_identical(engines, prompts):
    params = [SamplingParams(temperature=0.8, top_p=0.9, seed=7 + i, max_tokens=12, n=1 + i % 2)
              for i in range(len(prompts))]
    params[0] = SamplingParams(temperature=0.7, seed=1, max_tokens=12, repetition_penalty=1.3, frequency_penalty=0.5)
    a, _ = run(engines[0], prompts, params)
    b, _ = run(engines[1], prompts, params)
    assert summary(a) == summary(b)


def test_length_limited_rows_compute_nothing_extra(engines, prompts):
    params = [SamplingParams(temperature=0.0, max_tokens=3 + 2 * i, ignore_eos=True) for i in range(len(prompts))]
    (a, computed_sync), (b, computed_async) = run(engines[0], prompts, params), run(engines[1], prompts, params)
    assert summary(a) == summary(b)
    assert computed_async == computed_sync  # the length stop is known before its token lands


def test_preemption_mid_flight_is_identical(smollm2_dir, prompts):
    params = [SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True) for _ in prompts]
    outs = []
    for mode in ("off", "on"):
        engine = make_engine(smollm2_dir, mode, num_kv_blocks=8)  # 128 tokens for 8 growing sequences
        res, _ = run(engine, prompts, params)
        assert engine.scheduler.num_preemptions > 0
        outs.append(summary(res))
    assert outs[0] == outs[1]


def test_abort_while_a_step_is_in_flight(engines, prompts):
    engine = engines[1]
    for i, p in enumerate(prompts[:4]):
        engine.add_request(f"a{i}", p, SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True))
    for _ in range(3):
        engine.step()
    assert engine._inflight is not None
    engine.abort_request("a1")
    finished = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    assert finished["a1"].outputs[0].finish_reason == "abort"
    assert all(len(finished[f"a{i}"].outputs[0].token_ids) == 30 for i in (0, 2, 3))
    pool = engine.scheduler.kv.pool
    assert pool.num_free == pool.num_blocks
