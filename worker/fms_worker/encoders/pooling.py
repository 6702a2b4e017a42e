"""Sentence-embedding pooling over token states, as sentence-transformers' Pooling module defines it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden [B, S, H], attention_mask [B, S] -> [B, H] in float32 (pooling in fp32 whatever the compute dtype)."""
    h = hidden.float()
    m = attention_mask[..., None].to(h.dtype)  # [B, S, 1]
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return h.masked_fill(m == 0, -1e9).amax(dim=1)
    summed = (h * m).sum(dim=1)
    count = m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / count
    if mode == "mean_sqrt_len":
        return summed / count.sqrt()
    raise ValueError(f"pooling mode {mode!r} is not supported; use one of {', '.join(POOLING_MODES)}")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2, dim=-1)
