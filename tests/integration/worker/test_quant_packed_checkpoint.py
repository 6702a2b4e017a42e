"""4-bit GPTQ and AWQ checkpoints of SmolLM2 (written here in the AutoGPTQ and AutoAWQ "gemm" layouts,
round-to-nearest with integer zero points) load through the worker's loader and engine.

The gate is on what loading can lose: served as int4 (the checkpoint's group size) it must stay
within 1% of its own dense values' perplexity. How far the checkpoint itself is from float32 is
printed for the record: this fixture is already a 4-bit GGUF, and re-rounding it onto an
integer-zero grid costs far more than GPTQ or AWQ on a bf16 model would (see test_quant_perplexity).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from smollm2_checkpoints import greedy_at_degrees, write_quantized_copy
from test_quant_perplexity import _ppl

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.quantization.awq import pack_columns
from fms_worker.quantization.packed import pack_int4

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

GROUP = 32


def round_to_grid(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] -> codes [K, N], integer zero points [K/G, N], fp16 scales [K/G, N] (asymmetric round-to-nearest)."""
    n, k = weight.shape
    w = weight.float().t().reshape(k // group, group, n)  # [G, group, N]
    lo, hi = w.amin(dim=1), w.amax(dim=1)  # [G, N]
    scale = ((hi - lo) / 15).clamp(min=1e-6).half()
    zero = torch.round(-lo / scale.float()).clamp(0, 15)
    q = torch.clamp(torch.round(w / scale.float()[:, None]) + zero[:, None], 0, 15).reshape(k, n)
    return q.long(), zero.long(), scale


def gptq_parts(weight: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """AutoGPTQ layout, original format (zero points stored minus one)."""
    q, zero, scale = round_to_grid(weight, group)
    return {"qweight": pack_int4(q, 0), "qzeros": pack_int4(zero - 1, 1), "scales": scale,
            "g_idx": (torch.arange(q.shape[0]) // group).to(torch.int32)}


def awq_parts(weight: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """AutoAWQ "gemm" layout (codes packed along N, interleaved)."""
    q, zero, scale = round_to_grid(weight, group)
    return {"qweight": pack_columns(q), "qzeros": pack_columns(zero), "scales": scale}


FORMATS = {
    "gptq": (gptq_parts, {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": False,
                          "checkpoint_format": "gptq"}),
    "awq": (awq_parts, {"quant_method": "awq", "bits": 4, "group_size": GROUP, "version": "gemm", "zero_point": True}),
}


@pytest.fixture(scope="module", params=sorted(FORMATS))
def packed_dir(request, smollm2_dir, tmp_path_factory) -> Path:
    parts_of, quantization_config = FORMATS[request.param]
    out = tmp_path_factory.mktemp(f"smollm2-{request.param}")
    return write_quantized_copy(smollm2_dir, out, lambda w: parts_of(w, GROUP), quantization_config, torch.float16)


@pytest.fixture(scope="module")
def token_ids(smollm2_dir) -> list[int]:
    from test_quant_perplexity import TEXT
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))(TEXT.read_text())["input_ids"]


def test_packed_checkpoint_perplexity(smollm2_dir, packed_dir, token_ids):
    base = _ppl(smollm2_dir, token_ids, "float32", {})
    kept_4bit = _ppl(packed_dir, token_ids, "bfloat16", {"quantization": "int4", "int4_group_size": GROUP})
    dense = _ppl(packed_dir, token_ids, "float32", {})
    print(f"\nfloat32 {base:.3f}; {packed_dir.name} g{GROUP} served as int4 {kept_4bit:.3f} ({kept_4bit / base - 1:+.2%}), "
          f"served dense {dense:.3f} ({dense / base - 1:+.2%})")
    assert abs(kept_4bit / dense - 1) <= 0.01  # loading keeps the checkpoint's 4-bit grid
    assert dense < 2 * base  # and the checkpoint is a working model, not noise


def test_engine_serves_the_packed_checkpoint(packed_dir):
    engine = LLMEngine(WorkerConfig.model_validate({
        # No int4_group_size: int4 takes the checkpoint's own (32 here, not the default 128).
        "model": {"path": str(packed_dir)}, "precision": {"dtype": "bfloat16", "quantization": "int4"},
        "runtime": {"device": "cpu"}, "caching": {"num_kv_blocks": 64, "block_size": 16},
    }))
    assert {m.quant_method.group_size for m in engine.runner.model.modules()
            if getattr(m, "quant_method", None) is not None} == {GROUP}
    prompt = engine.tokenizer("The capital of France is")["input_ids"]
    (out,) = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8))
    text = out.outputs[0].text
    print(f"\n{packed_dir.name} as int4: {text!r}")
    assert "Paris" in text


def test_tensor_parallel_ranks_read_the_packed_checkpoint(packed_dir):
    """The ranks read files through mmap, where tensors come in the files' (dtype) order, not by name."""
    outs = greedy_at_degrees(packed_dir)
    assert outs[0] == outs[1]
