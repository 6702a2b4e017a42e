"""The engine's greedy output equals transformers' greedy generate, token for token, on real SmolLM2 weights.

Also with prefix caching hits, with preemption forced by a tiny KV cache, and for n=2 and seeded sampling.
"""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

MAX_NEW = 12
TEXTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):",
    "List three colors:",
    "Water boils at",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "In 1969, the first humans landed on",
    "import numpy as np\nimport torch\n\ndef main():\n",
    "Q: What is 2 + 2?\nA:",
    "Hello",
    "The best way to learn a new language is to practice every day, read books, watch movies and",
    "Photosynthesis is the process by which",
    "A haiku about autumn:\n",
    "SELECT name FROM users WHERE",
    "My favourite food is pizza because",
    "The mitochondria is the powerhouse of the",
]
SHARED = (
    "You are a helpful assistant. Answer briefly and precisely. Use plain words and avoid jargon. "
    "Think about the question before answering it, and never make up facts you do not know. Question: "
)


def make_engine(model_dir, **caching) -> LLMEngine:
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(model_dir)},
        "precision": {"dtype": "float32"},
        "runtime": {"device": "cpu"},
        "batching": {"max_num_batched_tokens": 256, "max_num_seqs": 32},
        "caching": {"num_kv_blocks": 128, "block_size": 16, **caching},
    })
    return LLMEngine(cfg)


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(smollm2_dir):
    return make_engine(smollm2_dir)


_HF_CACHE: dict[tuple[int, ...], list[int]] = {}


def hf_greedy(hf, prompts):
    """One prompt per generate call (no padding), remembered across tests."""
    with torch.no_grad():
        for p in prompts:
            if tuple(p) not in _HF_CACHE:
                ids = torch.tensor([p])
                gen = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW)
                _HF_CACHE[tuple(p)] = gen[0, len(p):].tolist()
    return [_HF_CACHE[tuple(p)] for p in prompts]


def engine_greedy(engine, prompts):
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=MAX_NEW))
    return [o.outputs[0].token_ids for o in outs]


def assert_pool_free(engine):
    stats = engine.stats()
    assert stats.num_free_kv_blocks == stats.num_kv_blocks and not engine.has_unfinished()


def test_greedy_matches_transformers(engine, hf):
    prompts = [engine.tokenizer.encode(t) for t in TEXTS]
    assert len({len(p) for p in prompts}) > 8
    assert engine_greedy(engine, prompts) == hf_greedy(hf, prompts)
    assert_pool_free(engine)


def test_prefix_cache_hits_keep_greedy_output(smollm2_dir, hf):
    engine = make_engine(smollm2_dir, prefix_caching=True)
    prompts = [engine.tokenizer.encode(SHARED + t) for t in TEXTS[:8]]
    first = engine_greedy(engine, prompts[:1])  # fills the cache with the shared prefix
    rest = engine_greedy(engine, prompts[1:])
    stats = engine.stats()
    assert stats.prefix_cache_hits >= 7 * 16 * (len(engine.tokenizer.encode(SHARED)) // 16 - 1)
    assert first + rest == hf_greedy(hf, prompts)
    assert_pool_free(engine)


def test_preemption_keeps_greedy_output(smollm2_dir, hf):
    engine = make_engine(smollm2_dir, num_kv_blocks=6, prefix_caching=False)
    prompts = [engine.tokenizer.encode(t) for t in TEXTS]
    assert engine_greedy(engine, prompts) == hf_greedy(hf, prompts)
    assert engine.stats().num_preemptions > 0
    assert_pool_free(engine)


def test_seeded_sampling_is_reproducible(engine):
    prompt = engine.tokenizer.encode(TEXTS[1])

    def run(seed):
        p = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=MAX_NEW, seed=seed, ignore_eos=True)
        return engine.generate([prompt, prompt], p)

    a, b, c = run(7), run(7), run(8)
    assert [o.outputs[0].token_ids for o in a] == [o.outputs[0].token_ids for o in b]
    assert a[0].outputs[0].token_ids == a[1].outputs[0].token_ids  # the seed, not the batch slot, decides
    assert a[0].outputs[0].token_ids != c[0].outputs[0].token_ids
    assert_pool_free(engine)


def test_n2_shares_prompt_blocks(engine):
    prompt = engine.tokenizer.encode(SHARED)  # several full blocks
    engine.add_request("n2", prompt, SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=MAX_NEW, ignore_eos=True))
    engine.step()  # the leader computes the prompt and forks
    seqs = [s for s in engine.scheduler.running if s.request_id == "n2"]
    assert len(seqs) == 2
    a, b = (engine.scheduler.kv.block_ids(s.seq_id) for s in seqs)
    shared = (len(prompt) - 1) // 16
    assert shared >= 2 and a[:shared] == b[:shared]
    final = None
    while engine.has_unfinished():
        for out in engine.step():
            final = out
    assert final.finished and [len(c.token_ids) for c in final.outputs] == [MAX_NEW, MAX_NEW]
    assert final.outputs[0].token_ids != final.outputs[1].token_ids
    assert_pool_free(engine)


def test_stop_string_is_cut_from_text(engine):
    prompt = engine.tokenizer.encode(TEXTS[0])  # greedy: " Paris.\n\nThe answer ..."
    (out,) = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=MAX_NEW, stop=["."]))
    c = out.outputs[0]
    assert (c.text, c.finish_reason, c.stop_reason) == (" Paris", "stop", ".")
    assert_pool_free(engine)
