"""Norms and the gated activation writing the next projection's input format (layers/quantized_rows.py).

On CPU the fused functions run eagerly, so the producer-side quantization must give exactly what the
projection's own pass gives; and the Llama layers must hand the rows to the three projections that follow a
norm or the activation (QKV, gate-up, down) and a plain tensor to the output projection."""

from __future__ import annotations

import torch
from torch import nn

from fms_worker.layers import fused
from fms_worker.layers.quant_method import UnquantizedLinearMethod
from fms_worker.layers.quantized_rows import InputFormat, QuantizedRows
from fms_worker.loader import load_weights
from fms_worker.models.llama import LlamaForCausalLM
from fms_worker.quantization.fp8 import FP8, ROWS, Fp8LinearMethod, quantize_fp8_rows
from tiny_llama import ARGS, checkpoint


def test_fp8_rows_equal_the_projections_own_pass():
    g = torch.Generator().manual_seed(0)
    x, res = (torch.randn(2, 3, 64, generator=g).bfloat16() for _ in range(2))
    w = torch.rand(64, generator=g).bfloat16() + 0.5
    h, r = fused.add_rms_norm(x, res, w, 1e-5)
    rows, r2 = fused.add_rms_norm_into(ROWS, x, res, w, 1e-5)
    q, s = quantize_fp8_rows(h.reshape(-1, 64))
    assert rows.shape == x.shape and rows.dtype == torch.bfloat16 and torch.equal(r2, r)
    assert rows.parts[0].dtype == FP8 and torch.equal(rows.parts[0].float(), q.float()) and torch.equal(rows.parts[1], s)
    rows = fused.rms_norm_into(ROWS, x, w, 1e-5)
    q, s = quantize_fp8_rows(fused.rms_norm(x, w, 1e-5).reshape(-1, 64))
    assert torch.equal(rows.parts[0].float(), q.float()) and torch.equal(rows.parts[1], s)
    gu = torch.randn(5, 128, generator=g).bfloat16()
    rows = fused.silu_and_mul_into(ROWS, gu)
    q, s = quantize_fp8_rows(fused.silu_and_mul(gu))
    assert rows.shape == (5, 64) and torch.equal(rows.parts[0].float(), q.float()) and torch.equal(rows.parts[1], s)


def test_fp8_input_format_is_an_experiment_switch():
    assert Fp8LinearMethod(fused_input=False).input_format() is None
    assert Fp8LinearMethod(fused_input=True).input_format() is ROWS
    assert UnquantizedLinearMethod().input_format() is None


class _Doubling(UnquantizedLinearMethod):
    """A format that doubles the rows (exact in float32); `apply` halves them back and records what it got."""

    def __init__(self):
        self.got: list[str] = []

    def input_format(self):
        return InputFormat("doubled", lambda rows: (rows * 2,))

    def apply(self, layer, x, bias):
        self.got.append("rows" if isinstance(x, QuantizedRows) else "tensor")
        if isinstance(x, QuantizedRows):
            x = (x.parts[0] / 2).reshape(x.shape)
        return super().apply(layer, x, bias)


class _QAsOutput(nn.Module):
    """Stands in for rotary + paged attention: returns the queries (the layer's data flow is what is tested)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.head_dim = head_dim

    def forward(self, positions, q, k, v, meta):
        return q


def test_llama_layers_hand_rows_to_the_projections_after_a_norm_or_the_activation():
    ckpt = checkpoint(ARGS)
    method = _Doubling()
    models = [LlamaForCausalLM(ARGS, torch.float32), LlamaForCausalLM(ARGS, torch.float32, quant_method=method)]
    outs = []
    for model in models:
        load_weights(model, iter(ckpt.items()))
        x, residual = torch.randn(6, ARGS.hidden_size, generator=torch.Generator().manual_seed(1)), None
        for layer in model.model.layers:
            layer.self_attn.attn = _QAsOutput(ARGS.head_dim)
            x, residual = layer(torch.arange(6), x, residual, None)
        outs.append((x, residual))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    # per layer: QKV (after the input norm), O (after attention), gate-up (after the norm), down (after silu*mul)
    assert method.got == ["rows", "tensor", "rows", "rows"] * ARGS.num_layers
