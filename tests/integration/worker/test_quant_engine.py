"""Quantized schemes through the real engine on CPU (SmolLM2-135M): it serves, and the fp8 KV cache
holds twice the blocks of a bf16 one in the same bytes."""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROMPT = "The Declaration of Independence was signed in the year"


def _engine(model_dir, **precision) -> LLMEngine:
    return LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "max_model_len": 256},
        "precision": {"dtype": "bfloat16", **precision},
        "runtime": {"device": "cpu", "enforce_eager": True},
        "caching": {"cpu_kv_cache_bytes": 64 << 20, "block_size": 16},
    }))


def _greedy(engine: LLMEngine, n: int = 8) -> list[int]:
    ids = engine.tokenizer(PROMPT)["input_ids"]
    return engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))[0].outputs[0].token_ids


def test_fp8_kv_cache_doubles_blocks_and_serves(smollm2_dir):
    base = _engine(smollm2_dir)
    fp8 = _engine(smollm2_dir, kv_cache_dtype="fp8")
    assert fp8.runner.kv_cache_dtype.itemsize == 1
    assert fp8.stats().num_kv_blocks == 2 * base.stats().num_kv_blocks
    ref, got = _greedy(base), _greedy(fp8)
    print(f"bf16 cache {ref}\nfp8 cache  {got}")
    assert got[:3] == ref[:3]


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_weight_quantized_engine_serves(smollm2_dir, quantization):
    engine = _engine(smollm2_dir, quantization=quantization, int4_group_size=32)
    layer = engine.runner.model.model.layers[0].mlp.down_proj
    assert not hasattr(layer, "weight") and layer.qweight.dtype in (torch.int8, torch.uint8)
    text = engine.tokenizer.decode(_greedy(engine))
    print(f"{quantization}: {PROMPT!r} -> {text!r}")
    assert "17" in text  # 1776, as the float model answers


def test_fp8_weights_refused_on_cpu(smollm2_dir):
    with pytest.raises(ValueError, match=r"compute capability >= 8.9 .*this device is CPU; use int8 or none"):
        _engine(smollm2_dir, quantization="fp8")
