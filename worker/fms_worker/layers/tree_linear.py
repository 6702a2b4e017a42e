"""Unquantized matmuls as a fixed float32 tree over 8 input slices (`precision.tp_invariant`).

With it a model gives the same logits, bit for bit, at tensor degree 1, 2, 4 or 8: how and why in
kernels/tree_matmul.py. Row-parallel layers hand their rank's subtotal to `RowParallelLinear`, which adds
the subtotals across ranks by the same tree before rounding once; the LM head (tied or not) and every
other layer compute the whole tree. Slower than cuBLAS and the bf16 GEMV (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from fms_worker.kernels.tree_matmul import SLICES, check_slices, tree_matmul
from fms_worker.layers.quant_method import LinearMethod, UnquantizedLinearMethod


class TreeLinearMethod(UnquantizedLinearMethod):
    sums_subtotals = True  # RowParallelLinear adds this method's float32 subtotals across ranks (tp_tree_sum)
    dense_weight = True  # works on a plain `weight`: a tied LM head uses it too

    def create_weights(self, layer, input_size, output_sizes, params_dtype, weight_loader):
        if SLICES % layer.tp_size:
            raise ValueError(f"precision.tp_invariant works at tensor degree 1, 2, 4 or 8, not {layer.tp_size}")
        check_slices(input_size, self._slices(layer))
        super().create_weights(layer, input_size, output_sizes, params_dtype, weight_loader)

    @staticmethod
    def _slices(layer) -> int:
        """A row-parallel rank holds SLICES / tp of its input's slices; other layers all of them."""
        return SLICES // layer.tp_size if getattr(layer, "splits_input", False) else SLICES

    def apply(self, layer, x, bias):
        y = tree_matmul(x, layer.weight, self._slices(layer))
        return y + bias if bias is not None else y

    def apply_float32(self, layer, x):
        """The float32 sum over this rank's slices: a row-parallel rank's subtotal for the cross-rank tree."""
        return tree_matmul(x, layer.weight, self._slices(layer), torch.float32)

    def apply_silu_mul(self, layer, x, bias):
        return LinearMethod.apply_silu_mul(self, layer, x, bias)  # not the bf16 GEMV's gated kernel

    def warm_up(self, layer, max_rows, float32_out=False):
        """Nothing tunes: one tile for every shape."""

    def for_lm_head(self):
        return self
