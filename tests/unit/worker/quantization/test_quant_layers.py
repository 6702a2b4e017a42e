"""Each scheme inside the real parallel linear layers: staged loading through weight_loader,
process_weights_after_loading, then apply vs the dense layer on CPU."""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import PrecisionConfig
from fms_worker.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from fms_worker.layers.quant_method import UnquantizedLinearMethod
from fms_worker.quantization import get_linear_method
from fms_worker.quantization.int4 import Int4LinearMethod
from fms_worker.quantization.int8 import Int8LinearMethod
from fms_worker.quantization.sparse24 import Sparse24LinearMethod, prune_24

GEN = torch.Generator().manual_seed(0)


def _rand(*shape):
    return torch.randn(*shape, generator=GEN) * shape[-1] ** -0.5


def _qkv_pair(method, dtype, hidden=576, head_dim=64, heads=9, kv_heads=3, prune=False):
    """A dense and a quantized QKV layer loaded with the same three checkpoint tensors."""
    shards = {"q": _rand(heads * head_dim, hidden), "k": _rand(kv_heads * head_dim, hidden),
              "v": _rand(kv_heads * head_dim, hidden)}
    if prune:
        shards = {k: prune_24(v) for k, v in shards.items()}
    layers = []
    for m in (UnquantizedLinearMethod(), method):
        layer = QKVParallelLinear(hidden, head_dim, heads, kv_heads, params_dtype=dtype, quant_method=m)
        for sid, t in shards.items():
            layer.weight.weight_loader(layer.weight, t, sid)
        m.process_weights_after_loading(layer)
        layers.append(layer)
    return layers


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_int8_qkv_matches_dense(dtype, use_kernel):
    dense, quant = _qkv_pair(Int8LinearMethod(use_kernel=use_kernel), dtype)
    assert quant.qweight.dtype == torch.int8 and not hasattr(quant, "weight")
    x = _rand(5, 576).to(dtype)
    assert _rel_err(quant(x), dense(x)) < 0.02


@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_qkv_matches_dense(group, dtype):
    dense, quant = _qkv_pair(Int4LinearMethod(group), dtype)
    assert quant.int4_kernel == "cpu"
    assert quant.int4_k_pad == (-576) % group  # 576 = 4.5 groups of 128: padded to 640
    x = _rand(5, 576).to(dtype)
    assert _rel_err(quant(x), dense(x)) < 0.15


class _DequantInt4(Int4LinearMethod):
    """The fallback path (used on devices/dtypes without an int4 kernel), forced on CPU."""

    @staticmethod
    def _kernel(weight, n):
        return "dequant"


def _row_layer(method, w):
    layer = RowParallelLinear(w.shape[1], w.shape[0], params_dtype=torch.bfloat16, quant_method=method)
    layer.weight.weight_loader(layer.weight, w)
    method.process_weights_after_loading(layer)
    return layer


def test_int4_kernel_and_dequant_fallback_agree():
    w, x = _rand(256, 576), _rand(3, 576).to(torch.bfloat16)
    kernel, fallback = _row_layer(Int4LinearMethod(128), w), _row_layer(_DequantInt4(128), w)
    assert (kernel.int4_kernel, fallback.int4_kernel) == ("cpu", "dequant")
    assert fallback.qweight.shape == (256, 320)  # two nibbles a byte, K padded 576 -> 640
    assert _rel_err(kernel(x), fallback(x)) < 0.01


def test_merged_and_row_layers_quantize_every_shard():
    method = Int8LinearMethod()
    gate, up = _rand(64, 32), _rand(64, 32)
    merged = MergedColumnParallelLinear(32, [64, 64], quant_method=method)
    assert merged.weight.is_meta  # nothing allocated before the checkpoint arrives
    merged.weight.weight_loader(merged.weight, gate, 0)
    assert not merged.weight.is_meta
    merged.weight.weight_loader(merged.weight, up, 1)
    method.process_weights_after_loading(merged)
    x = _rand(2, 32)
    ref = torch.cat([x @ gate.t(), x @ up.t()], dim=-1)
    assert _rel_err(merged(x), ref) < 0.02


def test_unloaded_layer_is_an_error():
    method = Int8LinearMethod()
    layer = RowParallelLinear(32, 16, quant_method=method)
    with pytest.raises(ValueError, match="never loaded"):
        method.process_weights_after_loading(layer)


def test_sparse24_cpu_runs_dense_and_refuses_dense_checkpoints():
    dense, sparse = _qkv_pair(Sparse24LinearMethod(), torch.float32, prune=True)
    x = _rand(4, 576)
    assert torch.allclose(sparse(x), dense(x))
    method = Sparse24LinearMethod()
    layer = RowParallelLinear(64, 32, quant_method=method)
    layer.weight.weight_loader(layer.weight, _rand(32, 64))
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        method.process_weights_after_loading(layer)


def test_registry_picks_the_scheme_and_refuses_fp8_on_cpu():
    cpu = torch.device("cpu")
    assert isinstance(get_linear_method(PrecisionConfig(), cpu), UnquantizedLinearMethod)
    assert isinstance(get_linear_method(PrecisionConfig(quantization="int8"), cpu), Int8LinearMethod)
    int4 = get_linear_method(PrecisionConfig(quantization="int4", int4_group_size=64), cpu)
    assert isinstance(int4, Int4LinearMethod) and int4.group_size == 64
    assert isinstance(get_linear_method(PrecisionConfig(sparsity="2:4"), cpu), Sparse24LinearMethod)
    with pytest.raises(ValueError, match=r"compute capability >= 8.9 \(H100, H200, L4, L40S\); this device is CPU; use int8"):
        get_linear_method(PrecisionConfig(quantization="fp8"), cpu)


def test_config_refuses_sparsity_with_quantization():
    with pytest.raises(ValueError, match="2:4 runs unquantized weights"):
        PrecisionConfig(quantization="int8", sparsity="2:4")
    with pytest.raises(ValueError):
        PrecisionConfig(int4_group_size=100)


def test_int4_rows_the_cpu_packer_cannot_take_fall_back_to_dequant():
    """The CPU tinygemm packer needs N divisible by 16; other layers still serve, through the fallback."""
    w, x = _rand(24, 128), _rand(2, 128).to(torch.bfloat16)
    layer = _row_layer(Int4LinearMethod(32), w)
    assert layer.int4_kernel == "dequant"
    assert _rel_err(layer(x), x.float() @ w.t()) < 0.15
