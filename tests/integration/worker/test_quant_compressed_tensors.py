"""compressed-tensors checkpoints of SmolLM2 (quant_method "compressed-tensors", the layout llm-compressor
writes), made here with the compressed-tensors library's own compressors: int4 weights packed in int32
words (pack-quantized, group 32, with zero points and symmetric), int8 weights (int-quantized, per
channel) and fp8 weights (float-quantized, per channel), the LM head left dense as such checkpoints do.

They load through the worker's loader and engine: served with the matching scheme a checkpoint keeps its
grid (perplexity within 1% of its own dense values); served dense it is a working model; tensor-parallel
ranks read it; and a linear whose weights lie exactly on the checkpoint's grid comes back exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from smollm2_checkpoints import greedy_at_degrees, write_quantized_copy
from test_quant_perplexity import _ppl

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.quantization.checkpoint import packed_format
from fms_worker.quantization.compressed_tensors import CompressedTensorsFormat
from fms_worker.quantization.packed import dense_view, expected_parts

pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

GROUP = 32
def _group_range(w):
    g = w.view(w.shape[0], -1, GROUP)
    return g.amin(-1), g.amax(-1)


# name -> (format, weight args, scale per linear weight [N, K], how to serve it kept quantized or None)
SCHEMES = {
    "w4a16": ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="group", group_size=GROUP),
              lambda w: (_group_range(w)[1] - _group_range(w)[0]) / 15, {"quantization": "int4", "int4_group_size": GROUP}),
    # symmetric (llm-compressor's usual W4A16; its scale convention max|w| / 7.5): int4 finds the grid again
    "w4a16-sym": ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=GROUP),
                  lambda w: w.abs().view(w.shape[0], -1, GROUP).amax(-1) / 7.5,
                  {"quantization": "int4", "int4_group_size": GROUP}),
    "w8a16": ("int-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
              lambda w: w.abs().amax(-1, keepdim=True) / 127, {"quantization": "int8"}),
    "fp8": ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel"),
            lambda w: w.abs().amax(-1, keepdim=True) / 448, None),  # fp8 schemes need a GPU: served dense here
}


def _scheme(name: str) -> QuantizationScheme:
    return QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**SCHEMES[name][1]))


def _quantization_config(name: str) -> dict:
    config = QuantizationConfig(config_groups={"group_0": _scheme(name)}, format=SCHEMES[name][0], ignore=["lm_head"])
    return json.loads(config.model_dump_json(exclude_none=True)) | {"quantization_status": "compressed"}


def _compress(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    fmt, args, scale_of, _ = SCHEMES[name]
    w = weight.float()
    scale = scale_of(w).clamp(min=1e-8)
    state = {"weight": w, "weight_scale": scale}
    if not args["symmetric"]:  # the zero point puts each group's minimum on code -8
        state["weight_zero_point"] = (-8 - torch.round(_group_range(w)[0] / scale)).clamp(-8, 7).to(torch.int8)
    return BaseCompressor.get_value_from_registry(fmt).compress(state, _scheme(name))


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def ct_dir(request, smollm2_dir, tmp_path_factory) -> tuple[str, Path]:
    """(scheme name, checkpoint directory)."""
    out = tmp_path_factory.mktemp(f"smollm2-ct-{request.param}")
    return request.param, write_quantized_copy(smollm2_dir, out, lambda w: _compress(request.param, w),
                                               _quantization_config(request.param), torch.bfloat16)


@pytest.fixture(scope="module")
def token_ids(smollm2_dir) -> list[int]:
    from test_quant_perplexity import TEXT
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))(TEXT.read_text())["input_ids"]


@pytest.fixture(scope="module")
def base_ppl(smollm2_dir, token_ids) -> float:
    return _ppl(smollm2_dir, token_ids, "float32", {})


def test_checkpoint_perplexity(ct_dir, token_ids, base_ppl):
    scheme, path = ct_dir
    dense = _ppl(path, token_ids, "float32", {})
    line = f"\nfloat32 {base_ppl:.3f}; {scheme} served dense {dense:.3f} ({dense / base_ppl - 1:+.2%})"
    kept = SCHEMES[scheme][3]
    if kept is not None:
        ppl = _ppl(path, token_ids, "bfloat16", kept)
        line += f", served as {kept['quantization']} {ppl:.3f} ({ppl / base_ppl - 1:+.2%})"
        assert abs(ppl / dense - 1) <= 0.01  # loading keeps the checkpoint's grid
    print(line)
    assert dense < 2 * base_ppl  # a working model, not noise (this fixture is already a 4-bit GGUF)


def test_engine_serves_the_checkpoint(ct_dir):
    scheme, path = ct_dir
    precision = {"dtype": "bfloat16"} | (SCHEMES[scheme][3] or {})
    precision.pop("int4_group_size", None)  # int4 takes the checkpoint's own group size (32, not the default 128)
    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(path)}, "precision": precision,
        "runtime": {"device": "cpu"}, "caching": {"num_kv_blocks": 64, "block_size": 16},
    }))
    if SCHEMES[scheme][3] and SCHEMES[scheme][3]["quantization"] == "int4":
        assert {m.quant_method.group_size for m in engine.runner.model.modules()
                if getattr(m, "quant_method", None) is not None} == {GROUP}
    prompt = engine.tokenizer("The capital of France is")["input_ids"]
    (out,) = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8))
    print(f"\n{scheme}: {out.outputs[0].text!r}")
    assert "Paris" in out.outputs[0].text


@pytest.mark.parametrize("ct_dir", ["w4a16"], indirect=True)  # one format: the ranks share the loader
def test_tensor_parallel_ranks_read_the_checkpoint(ct_dir):
    outs = greedy_at_degrees(ct_dir[1])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_weights_on_the_grid_come_back_exactly(name):
    """Codes, power-of-two scales and zero points chosen here -> the library's stored parts -> dense_view: exactly
    (codes - zero) * scale, and the tensors that are no linear's (a norm, a KV-cache scale) pass or drop."""
    gen = torch.Generator().manual_seed(0)
    n, k = 48, 128
    fmt_name, args, _, _ = SCHEMES[name]
    groups = k // GROUP if args["strategy"] == "group" else 1
    scale = 2.0 ** -torch.randint(4, 9, (n, groups), generator=gen).float()
    state = {"weight_scale": scale}
    if args["type"] == "float":
        codes = torch.randn(n, k, generator=gen).mul(100).to(torch.float8_e4m3fn).float()
        want = codes * scale
    else:
        lo, hi = (-8, 7) if args["num_bits"] == 4 else (-128, 127)
        codes = torch.randint(lo, hi + 1, (n, k), generator=gen).float()
        zero = torch.zeros(n, groups)
        if not args["symmetric"]:
            zero = torch.randint(lo, hi + 1, (n, groups), generator=gen).float()
            state["weight_zero_point"] = zero.to(torch.int8)
        want = (codes - zero.repeat_interleave(k // groups, dim=1)) * scale.repeat_interleave(k // groups, dim=1)
    state["weight"] = want
    parts = BaseCompressor.get_value_from_registry(fmt_name).compress(state, _scheme(name))
    stream = [*((f"model.layers.0.mlp.down_proj.{p}", t) for p, t in parts.items()),
              ("model.layers.0.self_attn.k_scale", torch.ones(())), ("model.norm.weight", torch.ones(4))]
    fmt = CompressedTensorsFormat.from_config(_quantization_config(name))
    out = dict(dense_view(iter(stream), fmt, torch.float32, expected_parts((s for s, _ in stream), fmt)))
    assert set(out) == {"model.layers.0.mlp.down_proj.weight", "model.norm.weight"}
    assert torch.equal(out["model.layers.0.mlp.down_proj.weight"], want)


def test_formats_it_cannot_serve_are_refused():
    class Cfg:
        quantization_config = _quantization_config("w4a16") | {"sparsity_config": {"format": "sparse-24-bitmask"}}

    with pytest.raises(ValueError, match="sparsity_config"):
        packed_format(Cfg())
    qc = _quantization_config("w4a16")
    qc["config_groups"]["group_0"]["format"] = "marlin-99"
    with pytest.raises(ValueError):
        CompressedTensorsFormat.from_config(qc)
    fmt = CompressedTensorsFormat.from_config(_quantization_config("w4a16") | {
        "config_groups": {"group_0": {**_quantization_config("w4a16")["config_groups"]["group_0"],
                                      "targets": ["re:.*mlp\\..*"]}}})
    assert fmt.required("model.layers.0.mlp.up_proj") == ("weight_packed", "weight_scale", "weight_shape",
                                                           "weight_zero_point")
    with pytest.raises(ValueError, match="no config group targets it"):
        fmt.required("model.layers.0.self_attn.q_proj")
