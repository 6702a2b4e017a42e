"""Each scheme's CUDA kernel against the dense product of its own dequantized weight (8B-like shapes)."""

from __future__ import annotations

import pytest
import torch

from fms_worker.layers.linear import MergedColumnParallelLinear, RowParallelLinear
from fms_worker.quantization.fp8 import Fp8LinearMethod, fp8_unsupported_reason
from fms_worker.quantization.int4 import Int4LinearMethod, dequantize_int4, quantize_int4
from fms_worker.quantization.int8 import Int8LinearMethod, has_int8pack_kernel
from fms_worker.quantization.kv_fp8 import read_kv, write_kv
from fms_worker.quantization.sparse24 import Sparse24LinearMethod, prune_24

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _layer(method, w, dtype=torch.bfloat16):
    with torch.device(CUDA):
        layer = RowParallelLinear(w.shape[1], w.shape[0], params_dtype=dtype, quant_method=method)
    assert layer.weight.is_meta
    layer.weight.weight_loader(layer.weight, w)
    method.process_weights_after_loading(layer)
    return layer


@pytest.fixture
def w():
    return torch.randn(1024, 4096, device=CUDA) * 4096**-0.5


@pytest.mark.parametrize("m", [1, 7, 256])
def test_int8(w, m):
    x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Int8LinearMethod(), w)
    print("int8 kernel on CUDA:", has_int8pack_kernel("cuda"))
    ref = x.float() @ (layer.qweight.float() * layer.scales.float()[:, None]).t()
    assert _rel(layer(x), ref) < 0.01
    assert _rel(layer(x), x.float() @ w.t()) < 0.03


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 7, 256])
def test_int4_tinygemm(w, group, m):
    x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Int4LinearMethod(group), w)
    assert layer.int4_kernel == "cuda"
    q, scale, zero = quantize_int4(w.bfloat16(), group)
    ref = x.float() @ dequantize_int4(q, scale.bfloat16(), zero.bfloat16(), group).t()
    assert _rel(layer(x), ref) < 0.01  # the kernel computes exactly our layout (nibble order, zero convention)


def test_int4_merged_odd_width():
    """SmolLM2-like width 576: padded to the group size, still on tinygemm."""
    gate, up = (torch.randn(1536, 576, device=CUDA) * 0.04 for _ in range(2))
    method = Int4LinearMethod(128)
    with torch.device(CUDA):
        layer = MergedColumnParallelLinear(576, [1536, 1536], params_dtype=torch.bfloat16, quant_method=method)
    layer.weight.weight_loader(layer.weight, gate, 0)
    layer.weight.weight_loader(layer.weight, up, 1)
    method.process_weights_after_loading(layer)
    assert layer.int4_kernel == "cuda" and layer.int4_k_pad == 64
    x = torch.randn(5, 576, device=CUDA, dtype=torch.bfloat16)
    assert _rel(layer(x), x.float() @ torch.cat([gate, up]).t()) < 0.15


@pytest.mark.skipif(torch.cuda.is_available() and fp8_unsupported_reason(CUDA) is not None, reason="needs sm89+")
@pytest.mark.parametrize("m", [1, 7, 256])
def test_fp8_w8a8(w, m):
    x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Fp8LinearMethod(), w)
    assert layer.qweight.dtype == torch.float8_e4m3fn
    assert _rel(layer(x), x.float() @ w.t()) < 0.05


def test_sparse24(w):
    w24 = prune_24(w)
    layer = _layer(Sparse24LinearMethod(), w24)
    assert type(layer.weight.data).__name__.startswith("SparseSemiStructured")
    for m in (1, 64, 256):
        x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
        assert _rel(layer(x), x.float() @ w24.t()) < 0.01


@pytest.mark.skipif(torch.cuda.is_available() and fp8_unsupported_reason(CUDA) is not None, reason="needs sm89+")
def test_fp8_kv_cache_round_trip():
    cache = torch.zeros(64, 8, 128, device=CUDA, dtype=torch.float8_e4m3fn)
    k = torch.randn(5, 8, 128, device=CUDA, dtype=torch.bfloat16)
    slots = torch.tensor([3, 9, 17, 40, 63], device=CUDA)
    write_kv(cache, slots, k, 0.5)
    assert _rel(read_kv(cache, slots, 0.5, torch.bfloat16), k) < 0.05


@pytest.mark.parametrize("n,k", [(384, 256), (256, 512), (1024, 256)])
@pytest.mark.parametrize("m", [1, 5, 37, 64])
def test_sparse24_small_shapes(n, k, m):
    """The tiny test model's shapes, token counts that are not multiples of the kernel tile."""
    w24 = prune_24(torch.randn(n, k, device=CUDA) * k**-0.5)
    layer = _layer(Sparse24LinearMethod(), w24)
    x = torch.randn(m, k, device=CUDA, dtype=torch.bfloat16)
    y = layer(x)
    assert y.is_contiguous()  # the paged-attention kernel reads q/k/v rows by stride
    assert _rel(y, x.float() @ w24.t()) < 0.01
