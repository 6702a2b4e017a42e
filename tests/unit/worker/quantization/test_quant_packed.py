"""Reading packed 4-bit checkpoints: int32 packing, GPTQ's zero-point formats and act-order groups,
AWQ's interleaved columns, and the one-linear-at-a-time dense view."""

from __future__ import annotations

import pytest
import torch

from fms_worker.quantization.awq import ORDER, AWQFormat, pack_columns, unpack_columns
from fms_worker.quantization.gptq import GPTQFormat
from fms_worker.quantization.packed import dense_view, expected_parts, pack_int4, unpack_int4


def test_pack_and_unpack_are_inverse_along_both_dims():
    values = torch.randint(0, 16, (16, 24), generator=torch.Generator().manual_seed(0))
    words0, words1 = pack_int4(values, dim=0), pack_int4(values, dim=1)
    assert words0.shape == (2, 24) and words1.shape == (16, 3) and words0.dtype == torch.int32
    assert torch.equal(unpack_int4(words0, dim=0), values)
    assert torch.equal(unpack_int4(words1, dim=1), values)
    # The layout itself: the lowest four bits hold the first value.
    assert unpack_int4(torch.tensor([[0x87654321]], dtype=torch.int64).to(torch.int32), dim=1).tolist() == \
        [[1, 2, 3, 4, 5, 6, 7, 8]]


def _parts(k=64, n=16, group=16, offset=1, g_idx=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (k, n), generator=gen)
    z = torch.randint(0, 16, (k // group, n), generator=gen)
    s = torch.rand(k // group, n, generator=gen).half() + 0.01
    groups = g_idx if g_idx is not None else torch.arange(k) // group
    expected = ((q - z[groups]).float() * s.float()[groups]).t()  # [N, K]
    parts = {"qweight": pack_int4(q, 0), "qzeros": pack_int4(z - offset, 1), "scales": s}
    if g_idx is not None:
        parts["g_idx"] = g_idx.to(torch.int32)
    return parts, expected


@pytest.mark.parametrize("version,offset", [("gptq", 1), ("gptq_v2", 0)])
def test_dequantize_reads_both_zero_point_conventions(version, offset):
    fmt = GPTQFormat.from_config({"bits": 4, "group_size": 16, "checkpoint_format": version})
    parts, expected = _parts(offset=offset)
    assert torch.allclose(fmt.dequantize(parts, torch.float32), expected)


def test_act_order_groups_follow_g_idx():
    fmt = GPTQFormat.from_config({"bits": 4, "group_size": 16})
    g_idx = (torch.arange(64) // 16)[torch.randperm(64, generator=torch.Generator().manual_seed(1))]
    parts, expected = _parts(g_idx=g_idx)
    assert torch.allclose(fmt.dequantize(parts, torch.float32), expected)


def test_dense_view_turns_each_linear_into_its_weight_and_passes_the_rest():
    fmt = GPTQFormat.from_config({"bits": 4, "group_size": 16})
    a, wa = _parts(seed=1)
    b, wb = _parts(seed=2, g_idx=torch.arange(64) // 16)
    stream = [("model.embed_tokens.weight", torch.ones(2)),
              *((f"model.layers.0.mlp.up_proj.{k}", v) for k, v in sorted(a.items())),
              ("model.layers.0.mlp.up_proj.bias", torch.zeros(16)),
              *((f"model.layers.0.mlp.down_proj.{k}", v) for k, v in sorted(b.items()))]
    # Files order tensors by dtype, not by layer: every int32 part first, then the scales.
    stream = sorted(stream, key=lambda kv: kv[1].dtype != torch.int32)
    out = dict(dense_view(iter(stream), fmt, torch.float32, expected_parts(n for n, _ in stream)))
    assert set(out) == {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
                        "model.layers.0.mlp.up_proj.bias", "model.layers.0.mlp.down_proj.weight"}
    assert torch.allclose(out["model.layers.0.mlp.up_proj.weight"], wa)
    assert torch.allclose(out["model.layers.0.mlp.down_proj.weight"], wb)


def test_incomplete_or_unsupported_checkpoints_are_refused():
    fmt = GPTQFormat.from_config({"bits": 4, "group_size": 16})
    parts, _ = _parts()
    stream = [("model.up_proj.qweight", parts["qweight"]), ("model.up_proj.qzeros", parts["qzeros"]),
              ("model.norm.weight", torch.ones(2))]
    with pytest.raises(ValueError, match="up_proj lacks scales"):
        list(dense_view(iter(stream), fmt, torch.float32, expected_parts(n for n, _ in stream)))
    with pytest.raises(ValueError, match="only 4-bit"):
        GPTQFormat.from_config({"bits": 8})
    with pytest.raises(ValueError, match="checkpoint_format 'marlin'"):
        GPTQFormat.from_config({"bits": 4, "checkpoint_format": "marlin"})


def test_awq_fields_hold_interleaved_columns_and_dequantize():
    values = torch.arange(16).repeat(3, 1) % 16  # row r: columns 0..15 hold codes 0..15
    words = pack_columns(values)
    assert words.shape == (3, 2) and torch.equal(unpack_columns(words), values)
    fields = unpack_int4(words, dim=1)  # field order, lowest bits first
    assert fields[0, :8].tolist() == list(ORDER)  # field i holds column ORDER[i]
    gen = torch.Generator().manual_seed(3)
    k, n, group = 64, 16, 16
    q, z = torch.randint(0, 16, (k, n), generator=gen), torch.randint(0, 16, (k // group, n), generator=gen)
    s = torch.rand(k // group, n, generator=gen).half() + 0.01
    groups = torch.arange(k) // group
    expected = ((q - z[groups]).float() * s.float()[groups]).t()
    fmt = AWQFormat.from_config({"quant_method": "awq", "bits": 4, "group_size": group, "version": "GEMM",
                                 "zero_point": True})
    got = fmt.dequantize({"qweight": pack_columns(q), "qzeros": pack_columns(z), "scales": s}, torch.float32)
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="'gemv'"):
        AWQFormat.from_config({"bits": 4, "version": "gemv"})


def test_int4_takes_a_packed_checkpoints_group_size_unless_one_is_set():
    from types import SimpleNamespace

    from fms_worker.config import PrecisionConfig
    from fms_worker.quantization import get_linear_method

    gptq32 = SimpleNamespace(quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 32})
    assert get_linear_method(PrecisionConfig(quantization="int4"), hf_config=gptq32).group_size == 32
    assert get_linear_method(PrecisionConfig(quantization="int4", int4_group_size=64), hf_config=gptq32).group_size == 64
    assert get_linear_method(PrecisionConfig(quantization="int4"), hf_config=SimpleNamespace()).group_size == 128
