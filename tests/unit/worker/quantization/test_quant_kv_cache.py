"""fp8 KV cache storage on CPU, and the pre-quantized checkpoint check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fms_worker.quantization import check_dense_checkpoint, kv_cache_dtype
from fms_worker.quantization.kv_fp8 import read_kv, write_kv

CPU = torch.device("cpu")


def test_kv_cache_dtype():
    assert kv_cache_dtype("auto", torch.bfloat16, CPU) is torch.bfloat16
    assert kv_cache_dtype("fp8", torch.bfloat16, CPU) is torch.float8_e4m3fn  # CPU stores fp8, upcasts on read
    with pytest.raises(ValueError, match="auto, fp8"):
        kv_cache_dtype("int8", torch.bfloat16, CPU)


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_fp8_write_then_read_round_trips(scale):
    cache = torch.zeros(16, 2, 8, dtype=torch.float8_e4m3fn)  # [slots, Hkv, D]
    k = torch.randn(3, 2, 8, dtype=torch.bfloat16)
    slots = torch.tensor([5, 0, 11])
    write_kv(cache, slots, k, scale)
    back = read_kv(cache, slots, scale, torch.bfloat16)
    assert back.dtype == torch.bfloat16
    assert ((back.float() - k.float()).abs() <= k.float().abs() / 16 + 1e-3).all()
    assert read_kv(cache, torch.tensor([1, 2]), scale, torch.bfloat16).abs().sum() == 0  # untouched slots


def test_fp8_write_clamps_instead_of_nan():
    cache = torch.zeros(4, 1, 2, dtype=torch.float8_e4m3fn)
    write_kv(cache, torch.tensor([0]), torch.tensor([[[1000.0, -1e6]]]), 1.0)
    assert read_kv(cache, torch.tensor([0]), 1.0, torch.float32).tolist() == [[[448.0, -448.0]]]


def test_model_dtype_cache_is_a_plain_copy():
    cache = torch.zeros(4, 1, 2)
    write_kv(cache, torch.tensor([2]), torch.tensor([[[0.1234567, 2.0]]]), 1.0)
    assert torch.equal(read_kv(cache, torch.tensor([2]), 1.0, torch.float32), torch.tensor([[[0.1234567, 2.0]]]))


@pytest.mark.parametrize("qc,hint", [
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "precision.quantization int8"),
    ({"quant_method": "hqq"}, "int8, int4 or fp8"),
    ({"quant_method": "fp8"}, "precision.quantization fp8"),
])
def test_prequantized_checkpoints_get_a_clear_error(qc, hint):
    with pytest.raises(ValueError, match="pre-quantized checkpoint") as e:
        check_dense_checkpoint(SimpleNamespace(quantization_config=qc), "/models/x")
    assert hint in str(e.value) and qc["quant_method"] in str(e.value)


def test_dense_and_gptq_checkpoints_pass():
    check_dense_checkpoint(SimpleNamespace(), "/models/x")
    for method in ("gptq", "awq", "compressed-tensors"):
        check_dense_checkpoint(SimpleNamespace(quantization_config={"quant_method": method, "bits": 4}), "/models/x")
