"""How a linear layer stores and applies its weight.

Layers own the *shape* (which slice of the full matrix this rank holds); the
method owns the *representation* (dense, int8, int4, fp8 ...). A quantization
scheme is one `LinearMethod` subclass; layers never know which one they hold.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.kernels import int8_matmul as gemv
from fms_worker.kernels.tuning import GEMV_MAX_M
from fms_worker.layers import fused
from fms_worker.layers.quantized_rows import InputFormat


class LinearMethod:
    def create_weights(
        self,
        layer: nn.Module,
        input_size: int,
        output_sizes: list[int],
        params_dtype: torch.dtype,
        weight_loader: Callable,
    ) -> None:
        """Register the layer's parameters for a [sum(output_sizes), input_size] slice."""
        raise NotImplementedError

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Repack or quantize once all shards are in (no-op by default)."""

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: a tensor, or the `QuantizedRows` of `input_format` where the method names one."""
        raise NotImplementedError

    def input_format(self) -> InputFormat | None:
        """The format the layer before may write this method's input in (layers/quantized_rows.py), or None
        (the default): activations in the model dtype."""
        return None

    def apply_float32(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`apply` without a bias, the result in float32 (the LM head's logits). By default the model-dtype
        result upcast; a scheme whose kernel can write float32 overrides this to skip that rounding."""
        return self.apply(layer, x, None).float()

    def apply_silu_mul(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """A gated layer's silu(gate) * up, where the weight's rows are gate then up. By default `apply` then
        the (compiled) activation; a scheme whose kernel can apply it in its epilogue overrides this."""
        return fused.silu_and_mul(self.apply(layer, x, bias))

    def warm_up(self, layer: nn.Module, max_rows: int, float32_out: bool = False) -> None:
        """Run once at start for every row-count bucket up to `max_rows`, where the kernel tunes itself on the
        first call per shape (no-op by default)."""

    def warm_up_call(self, layer: nn.Module, x: torch.Tensor, float32_out: bool = False) -> None:
        """Run what a step runs on rows `x` through `layer`: the head's float32 logits, a gated layer's single
        row through `apply_silu_mul` (its gated kernel), anything else through `apply`."""
        if float32_out:
            self.apply_float32(layer, x)
        elif getattr(layer, "gated", False) and x.shape[0] == GEMV_MAX_M:
            self.apply_silu_mul(layer, x, None)
        else:
            self.apply(layer, x, None)

    def for_lm_head(self) -> "LinearMethod | None":
        """The method an untied LM head uses, or None to keep it in the model dtype (the default)."""
        return None


# Unquantized one-row matmuls (bf16 decode at batch 1) run the int8 GEMV's loop on the 16-bit weights
# (kernels/int8_matmul.gemv16): the gate-up projection writes silu(gate) * up itself, and no split-K reduce kernel
# follows the small per-rank matmuls of tensor parallelism. Measured on H200 (docs/benchmarks.md): the matmuls of
# an 8B step read the weights at 4.3 TB/s, batch 1 9-10% faster at TP=1 and TP=2. FMS_BF16_GEMV=0 in the worker's
# environment selects cuBLAS.
GEMV16 = os.environ.get("FMS_BF16_GEMV", "1") != "0"


class UnquantizedLinearMethod(LinearMethod):
    def create_weights(self, layer, input_size, output_sizes, params_dtype, weight_loader):
        weight = nn.Parameter(torch.empty(sum(output_sizes), input_size, dtype=params_dtype), requires_grad=False)
        weight.weight_loader = weight_loader
        layer.register_parameter("weight", weight)

    def apply(self, layer, x, bias):
        if GEMV16 and gemv.gemv16_supported(x, layer.weight):
            return gemv.gemv16(x.reshape(1, -1), layer.weight, bias).reshape(*x.shape[:-1], -1)
        return F.linear(x, layer.weight, bias)

    def apply_silu_mul(self, layer, x, bias):
        if GEMV16 and bias is None and gemv.gemv16_supported(x, layer.weight):
            return gemv.gemv16(x.reshape(1, -1), layer.weight, gated=True).reshape(*x.shape[:-1], -1)
        return super().apply_silu_mul(layer, x, bias)

    def warm_up(self, layer, max_rows, float32_out=False):
        """The 16-bit GEMV's autotuner runs once per shape here, not inside a CUDA graph capture."""
        w = getattr(layer, "weight", None)
        if not GEMV16 or float32_out or w is None or w.is_meta:
            return
        self.warm_up_call(layer, torch.zeros(1, w.shape[1], dtype=w.dtype, device=w.device))
