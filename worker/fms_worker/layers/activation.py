"""SiLU-and-multiply: the gated MLP's activation over the fused gate-up output."""

from __future__ import annotations

import torch
from torch import nn

from fms_worker.layers import fused


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.silu_and_mul(x)  # [T, 2I] -> [T, I]
