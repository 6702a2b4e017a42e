"""What the pre-quantized checkpoint layouts share: reading a checkpoint as dense weights one linear at a
time (and, for GPTQ and AWQ, int32 words of eight 4-bit codes).

A packed linear `P` is stored as parts such as `P.qweight`, `P.qzeros`, `P.scales` (GPTQ, AWQ) or
`P.weight_packed`, `P.weight_scale` (compressed-tensors) instead of a dense `P.weight`. `dense_view` turns
each back into its dense `P.weight` as soon as all of its parts have arrived (files order tensors by dtype,
not by layer, so which parts to wait for comes from the files' headers), so the model's own quantization
methods, tensor-parallel slicing and fused projections apply unchanged, and at most a few linears are ever
waiting. A layout (`LinearParts`) names its parts, the part that marks a packed linear, the parts each one
needs, and the tensors to drop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

REQUIRED = ("qweight", "qzeros", "scales")
PARTS = (*REQUIRED, "g_idx")  # g_idx: GPTQ only, and optional there


class LinearParts:
    """A layout's part names; these defaults are GPTQ's and AWQ's."""

    parts: tuple[str, ...] = PARTS  # what a packed linear may store
    marker: str | None = None  # a prefix is a packed linear when it stores this part (None: any of `parts`)
    drop: tuple[str, ...] = ()  # tensor names (their last component) the model has no use for

    def required(self, prefix: str) -> tuple[str, ...]:
        return REQUIRED


class PackedFormat(Protocol):
    parts: tuple[str, ...]
    marker: str | None
    drop: tuple[str, ...]

    def required(self, prefix: str) -> tuple[str, ...]:
        """The parts linear `prefix` cannot load without."""

    def dequantize(self, parts: dict[str, torch.Tensor], dtype: torch.dtype, prefix: str = "") -> torch.Tensor:
        """The parts of one linear (`prefix`) -> its dense weight [N, K]."""


def unpack_int4(words: torch.Tensor, dim: int) -> torch.Tensor:
    """int32 words holding eight 4-bit values (lowest bits first) -> int32 values, 8x longer along `dim`."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    w = words.to(torch.int32).unsqueeze(-1)  # [..., 1]
    nibbles = (w >> shifts) & 0xF  # [..., 8]
    if dim == 0:  # [R, C] -> [R, C, 8] -> [R, 8, C] -> [R*8, C]
        return nibbles.permute(0, 2, 1).reshape(-1, words.shape[1])
    return nibbles.reshape(words.shape[0], -1)


def pack_int4(values: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of unpack_int4 (tests and checkpoint writers)."""
    v = values.to(torch.int64) & 0xF
    if dim == 0:
        v = v.reshape(-1, 8, v.shape[1]).permute(0, 2, 1)  # [R, C, 8]
    else:
        v = v.reshape(v.shape[0], -1, 8)  # [R, C, 8]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64)
    words = (v << shifts).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def expected_parts(names, fmt: PackedFormat = LinearParts()) -> dict[str, set[str]]:
    """For each packed linear in a checkpoint's tensor names: which of its parts the checkpoint holds."""
    parts: dict[str, set[str]] = {}
    for name in names:
        prefix, _, part = name.rpartition(".")
        if part in fmt.parts:
            parts.setdefault(prefix, set()).add(part)
    return {p: have for p, have in parts.items() if fmt.marker is None or fmt.marker in have}


def dense_view(weights: Iterator[tuple[str, torch.Tensor]], fmt: PackedFormat, dtype: torch.dtype,
               expected: dict[str, set[str]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Checkpoint tensors with every packed linear replaced by its dense `weight`, yielded once all of its parts
    (`expected`, from the checkpoint's headers) have arrived, in whatever order the files store them."""
    for prefix, have in expected.items():
        missing = [p for p in fmt.required(prefix) if p not in have]
        if missing:
            raise ValueError(f"packed checkpoint: {prefix} lacks {', '.join(missing)}")
    waiting: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        prefix, _, part = name.rpartition(".")
        if part in fmt.drop:
            continue
        if part not in fmt.parts or prefix not in expected:
            yield name, tensor
            continue
        parts = waiting.setdefault(prefix, {})
        parts[part] = tensor
        if len(parts) == len(expected[prefix]):
            yield f"{prefix}.weight", fmt.dequantize(waiting.pop(prefix), dtype, prefix)
    if waiting:
        raise ValueError(f"packed checkpoint: {len(waiting)} linear(s) incomplete, e.g. {next(iter(waiting))}")
