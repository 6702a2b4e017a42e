"""Sentence-embedding pooling over token states, as sentence-transformers' Pooling module defines it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """hidden [B, S, H], attention_mask [B, S] (None: no padding) -> [B, H] float32, whatever the compute dtype."""
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode {mode!r} is not supported; use one of {', '.join(POOLING_MODES)}")
    if mode == "cls":
        return hidden[:, 0].float()
    if attention_mask is None:
        if mode == "max":
            return hidden.amax(dim=1).float()
        summed = hidden.sum(dim=1, dtype=torch.float32)
        count = torch.full_like(summed[:, :1], hidden.shape[1])
    else:
        m = attention_mask[..., None].to(hidden.dtype)  # [B, S, 1]
        if mode == "max":
            return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1).float()
        # [B, 1, S] @ [B, S, H]: the masked sum as one batched matmul, no full-size fp32 copy of the states.
        summed = torch.bmm(m.transpose(1, 2), hidden).squeeze(1).float()
        count = m.sum(dim=1).float().clamp(min=1e-9)
    return summed / (count if mode == "mean" else count.sqrt())


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2, dim=-1)
