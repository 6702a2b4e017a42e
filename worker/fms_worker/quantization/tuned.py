"""Schemes whose CUDA kernels autotune on first use (int8, int4): the start-up warm-up they share.

A Triton autotuner times every candidate tile the first time it meets a (row bucket, shape) key; inside
a request that is seconds (one 8B batch-1 request that met an untuned bucket took 1.4 s longer). The
engine calls `warm_up` at start for every bucket a step can hit, so no request waits for it; with a
persistent Triton cache dir the choices survive restarts.
"""

from __future__ import annotations

import torch

from fms_worker.kernels.tuning import GEMV_MAX_M, m_bucket
from fms_worker.quantization.staged import StagedLinearMethod


def warm_up_rows(max_rows: int) -> list[int]:
    """One row count per autotuning bucket up to `max_rows`: the GEMV's single row, then each tile bucket's top
    (the last one cut to `max_rows`)."""
    rows = [GEMV_MAX_M] if max_rows >= GEMV_MAX_M else []
    m = GEMV_MAX_M + 1
    while m <= max_rows:
        bucket = m_bucket(m)
        rows.append(min(bucket, max_rows))
        if bucket >= m_bucket(max_rows):
            break
        m = bucket + 1
    return rows


class TunedLinearMethod(StagedLinearMethod):
    def rows(self, layer, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [T, K] with a contiguous last dim, as the kernels take their activations."""
        x2 = x.reshape(-1, x.shape[-1])
        return x2 if x2.stride(-1) == 1 else x2.contiguous()

    def warm_up_input(self, layer) -> torch.Tensor | None:
        """A one-row input [1, in_features] of the activation dtype, or None where this layer runs no tuned
        kernel (CPU, dequant fallback)."""
        raise NotImplementedError

    def warm_up(self, layer, max_rows, float32_out=False):
        x = self.warm_up_input(layer)
        if x is None:
            return
        for rows in warm_up_rows(max_rows):
            self.warm_up_call(layer, x.expand(rows, -1).contiguous(), float32_out)
