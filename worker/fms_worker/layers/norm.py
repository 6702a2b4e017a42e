"""RMSNorm, computed in float32 like the reference implementations (matters for bf16/fp16)."""

from __future__ import annotations

import torch
from torch import nn

from fms_worker.layers import fused
from fms_worker.parallel.comm import tp_all_reduce, tp_fused_reduce_add_rms_norm


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-6, params_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=params_dtype), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, into=None, partial: bool = False,
                parity: int = 0):
        """With `residual`, adds it first and returns (normed, new residual): the pre-norm block's add+norm.
        `into`: the next linear layer's input format (`LinearBase.input_format`); the normed rows come out as
        its `QuantizedRows`. `partial`: x is this rank's share of a row-parallel projection's output
        (`RowParallelLinear.forward(reduce=False)`), summed over the ranks here first, in the same kernel as
        the add and the norm where that fits; `parity` alternates between consecutive partial calls."""
        if partial:
            if into is None and residual is not None:
                done = tp_fused_reduce_add_rms_norm(x, residual, self.weight, self.eps, parity)
                if done is not None:
                    return done
            x = tp_all_reduce(x)
        if into is not None:
            if residual is None:
                return fused.rms_norm_into(into, x, self.weight, self.eps)
            return fused.add_rms_norm_into(into, x, residual, self.weight, self.eps)
        if residual is None:
            return fused.rms_norm(x, self.weight, self.eps)
        return fused.add_rms_norm(x, residual, self.weight, self.eps)
