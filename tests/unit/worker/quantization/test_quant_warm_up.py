"""The int8 kernel's start-up warm-up (one call per autotuning bucket) and its float32 LM-head output.

The Triton kernel itself needs a GPU (or the interpreter, test_int8_matmul_interpret.py); here the layers are
marked as using it and `int8_matmul` is replaced by a recorder, to check what the layers ask of it."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from fms_worker.kernels.tuning import m_bucket
from fms_worker.layers.embedding import ParallelLMHead
from fms_worker.layers.linear import MergedColumnParallelLinear, RowParallelLinear
from fms_worker.model_runner.runner import ModelRunner
from fms_worker.quantization import int8
from fms_worker.quantization.int8 import Int8LinearMethod
from fms_worker.quantization.tuned import warm_up_rows


def test_warm_up_rows_cover_every_bucket_once():
    assert warm_up_rows(1) == [1]
    assert warm_up_rows(8) == [1, 8]
    assert warm_up_rows(100) == [1, 16, 32, 64, 100]
    rows = warm_up_rows(8192)
    assert rows == [1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    # every row count a step can have falls in a bucket that was warmed (one row: the GEMV)
    warmed = {m_bucket(r) for r in rows if r > 1}
    assert all(m_bucket(m) in warmed for m in range(2, 8193))


def _recording(monkeypatch):
    calls = []

    def fake(x, q, scale, bias=None, *, out_dtype=None):
        calls.append((x.shape[0], out_dtype))
        return torch.zeros(x.shape[0], q.shape[0], dtype=out_dtype or x.dtype)

    monkeypatch.setattr(int8, "int8_matmul", fake)
    return calls


def _as_triton(layer: nn.Module, method: Int8LinearMethod) -> nn.Module:
    method.process_weights_after_loading(layer)
    layer.int8_kernel = "triton"  # what a CUDA bf16 weight gets
    return layer


def _layers():
    method = Int8LinearMethod()
    linear = RowParallelLinear(64, 32, params_dtype=torch.bfloat16, quant_method=method)
    linear.weight.weight_loader(linear.weight, torch.randn(32, 64))
    head = ParallelLMHead(48, 64, params_dtype=torch.bfloat16, quant_method=method)
    head.weight.weight_loader(head.weight, torch.randn(48, 64))
    return _as_triton(linear, method), _as_triton(head, method)


def test_runner_warms_every_bucket_and_the_head_in_float32(monkeypatch):
    calls = _recording(monkeypatch)
    linear, head = _layers()
    twin, _ = _layers()  # a second layer of the same shape (as every decoder layer is): its kernels are tuned
    runner = SimpleNamespace(model=nn.ModuleList([linear, twin, head]), gpu=False, device=torch.device("cpu"))
    ModelRunner.warm_up_kernels(runner, 100, 8)
    assert calls == [(r, torch.bfloat16) for r in warm_up_rows(100)] + [(r, torch.float32) for r in warm_up_rows(8)]


def test_quantized_head_logits_come_from_the_kernel_in_float32(monkeypatch):
    calls = _recording(monkeypatch)
    _, head = _layers()
    logits = head.compute_logits(torch.randn(3, 64, dtype=torch.bfloat16))
    assert calls == [(3, torch.float32)] and logits.dtype == torch.float32 and logits.shape == (3, 48)


def test_a_gated_layer_warms_the_gated_gemv_for_one_row(monkeypatch):
    calls = _recording(monkeypatch)
    gemv_calls = []

    def fake_gemv(x, q, scale, bias=None, *, gated=False, **kw):
        gemv_calls.append((x.shape[0], gated))
        return torch.zeros(1, q.shape[0] // 2, dtype=x.dtype)

    monkeypatch.setattr(int8, "int8_gemv", fake_gemv)
    method = Int8LinearMethod()
    gate_up = MergedColumnParallelLinear(64, [32, 32], params_dtype=torch.bfloat16, quant_method=method, gated=True)
    for shard in (0, 1):
        gate_up.weight.weight_loader(gate_up.weight, torch.randn(32, 64), shard)
    _as_triton(gate_up, method)
    method.warm_up(gate_up, 100)
    assert gemv_calls == [(1, True)]  # one row: silu(gate) * up inside the GEMV
    assert calls == [(r, torch.bfloat16) for r in warm_up_rows(100) if r > 1]  # more rows: matmul + activation
    y = gate_up(torch.randn(1, 64, dtype=torch.bfloat16))
    assert y.shape == (1, 32) and gemv_calls[-1] == (1, True)
    assert gate_up(torch.randn(3, 64, dtype=torch.bfloat16)).shape == (3, 32) and calls[-1] == (3, torch.bfloat16)


def test_off_the_triton_kernel_warm_up_does_nothing(monkeypatch):
    calls = _recording(monkeypatch)
    method = Int8LinearMethod()
    layer = RowParallelLinear(64, 32, params_dtype=torch.bfloat16, quant_method=method)
    layer.weight.weight_loader(layer.weight, torch.randn(32, 64))
    method.process_weights_after_loading(layer)  # CPU: torch's int8pack kernel, nothing to tune
    method.warm_up(layer, 4096)
    assert calls == [] and layer.int8_kernel == "cpu"


def test_bf16_layers_warm_their_16_bit_gemv_once(monkeypatch):
    """Unquantized layers run one-row matmuls through the 16-bit GEMV (default on CUDA): the warm-up tunes it
    once per layer shape, gated for a gate-up layer, and leaves the head (float32 logits, cuBLAS) alone."""
    import fms_worker.layers.quant_method as qm

    calls = []

    def fake_gemv16(x, w, bias=None, *, gated=False, **kw):
        calls.append((x.shape[0], w.shape[0], gated))
        return torch.zeros(1, w.shape[0] // (2 if gated else 1), dtype=x.dtype)

    monkeypatch.setattr(qm, "GEMV16", True)
    monkeypatch.setattr(qm.gemv, "gemv16_supported", lambda x, w: x.shape[0] == 1)
    monkeypatch.setattr(qm.gemv, "gemv16", fake_gemv16)
    method = qm.UnquantizedLinearMethod()
    gate_up = MergedColumnParallelLinear(64, [32, 32], params_dtype=torch.bfloat16, quant_method=method, gated=True)
    down = RowParallelLinear(32, 64, params_dtype=torch.bfloat16, quant_method=method)
    for layer in (gate_up, down):
        layer.weight.data = torch.randn(layer.weight.shape, dtype=torch.bfloat16)
        method.warm_up(layer, 4096)
    method.warm_up(down, 4096, float32_out=True)
    assert calls == [(1, 64, True), (1, 64, False)]
