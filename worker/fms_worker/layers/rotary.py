"""Rotary position embedding (rotate-half layout), with Llama 3 frequency scaling."""

from __future__ import annotations

import math

import torch
from torch import nn

from fms_worker.layers import fused

SUPPORTED_ROPE = ("default", "llama3", "linear")


def _inv_freq(head_dim: int, base: float, scaling: dict | None) -> torch.Tensor:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in SUPPORTED_ROPE:
        raise ValueError(f"rope scaling {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE)}")
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(is_mid, mid, scaled)
    return inv_freq


_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _tables(head_dim: int, max_position: int, base: float, scaling: dict | None):
    """cos/sin [P, D] shared by every layer: a 128k-position table per layer would cost GBs of GPU memory."""
    device = torch.empty(0).device  # the loader builds the model under `with torch.device(...)`
    key = (head_dim, max_position, base, repr(sorted((scaling or {}).items())), str(device))
    if key not in _TABLES:
        inv_freq = _inv_freq(head_dim, base, scaling).to(device)
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32, device=device), inv_freq)  # [P, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
        _TABLES[key] = (emb.cos(), emb.sin())
    return _TABLES[key]


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, base: float, scaling: dict | None = None):
        super().__init__()
        self.cos, self.sin = _tables(head_dim, max_position, base, scaling)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """q [T, H, D], k [T, Hkv, D], positions [T]."""
        return fused.rope(positions, q, k, self.cos, self.sin)
