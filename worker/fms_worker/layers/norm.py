"""RMSNorm, computed in float32 like the reference implementations (matters for bf16/fp16)."""

from __future__ import annotations

import torch
from torch import nn

from fms_worker.layers import fused


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-6, params_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=params_dtype), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, into=None):
        """With `residual`, adds it first and returns (normed, new residual): the pre-norm block's add+norm.
        `into`: the next linear layer's input format (`LinearBase.input_format`); the normed rows come out as
        its `QuantizedRows`."""
        if into is not None:
            if residual is None:
                return fused.rms_norm_into(into, x, self.weight, self.eps)
            return fused.add_rms_norm_into(into, x, residual, self.weight, self.eps)
        if residual is None:
            return fused.rms_norm(x, self.weight, self.eps)
        return fused.add_rms_norm(x, residual, self.weight, self.eps)
