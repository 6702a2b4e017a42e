"""Reading 4-bit GPTQ checkpoints (the AutoGPTQ / GPTQModel / optimum layout).

Each quantized linear `P` is stored as four tensors instead of `P.weight`:

    P.qweight  [K/8, N] int32   eight 4-bit codes along K per word, lowest bits first
    P.qzeros   [K/G, N/8] int32 eight 4-bit zero points along N per word
    P.scales   [K/G, N] float16
    P.g_idx    [K] int32        group of each input column (act-order checkpoints permute it)

and w[n, k] = (q[k, n] - z[g, n]) * s[g, n] with g = g_idx[k]. The original
("gptq", v1) format stores every zero point minus one; "gptq_v2" stores it as is.

The loader reads such a checkpoint by turning each linear back into its dense
`P.weight` as its four tensors arrive (one layer at a time, like any dense
shard), so the model's own quantization methods, tensor-parallel slicing and
fused projections apply unchanged. With `precision.quantization: int4` and the
checkpoint's group size the weights land on the same 4-bit grid again; with no
quantization the model runs dense.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_PARTS = ("qweight", "qzeros", "scales", "g_idx")


@dataclass(frozen=True)
class GPTQFormat:
    bits: int
    group_size: int
    zero_offset: int  # added to every stored zero point: 1 for the original format, 0 for v2

    @classmethod
    def from_config(cls, qc: dict) -> "GPTQFormat":
        bits = int(qc.get("bits", 4))
        if bits != 4:
            raise ValueError(f"GPTQ checkpoints with {bits}-bit weights are not supported; only 4-bit ones load")
        version = str(qc.get("checkpoint_format", "gptq"))
        if version not in ("gptq", "gptq_v2"):
            raise ValueError(f"GPTQ checkpoint_format {version!r} is not supported; use 'gptq' or 'gptq_v2'")
        return cls(bits, int(qc.get("group_size", 128)), 1 if version == "gptq" else 0)


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


def dequantize(parts: dict[str, torch.Tensor], fmt: GPTQFormat, dtype: torch.dtype) -> torch.Tensor:
    """The four tensors of one linear -> its dense weight [N, K]."""
    q = unpack_int4(parts["qweight"], dim=0)  # [K, N]
    zeros = (unpack_int4(parts["qzeros"], dim=1) + fmt.zero_offset) & 0xF  # [K/G, N]; v1 wraps a zero of 0 to 15
    scales = parts["scales"].float()  # [K/G, N]
    k = q.shape[0]
    g_idx = parts.get("g_idx")
    groups = g_idx.long() if g_idx is not None else torch.arange(k) // fmt.group_size
    w = (q - zeros[groups]).float() * scales[groups]  # [K, N]
    return w.t().contiguous().to(dtype)


def expected_parts(names) -> dict[str, set[str]]:
    """For each GPTQ linear in a checkpoint's tensor names: which of its parts the checkpoint holds."""
    parts: dict[str, set[str]] = {}
    for name in names:
        prefix, _, part = name.rpartition(".")
        if part in _PARTS:
            parts.setdefault(prefix, set()).add(part)
    return parts


def dense_view(weights: Iterator[tuple[str, torch.Tensor]], fmt: GPTQFormat, dtype: torch.dtype,
               expected: dict[str, set[str]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Checkpoint tensors with every GPTQ linear replaced by its dense `weight`, yielded once all of its parts
    (`expected`, from the checkpoint's headers) have arrived, in whatever order the files store them."""
    for prefix, have in expected.items():
        missing = [p for p in _PARTS[:3] if p not in have]
        if missing:
            raise ValueError(f"GPTQ checkpoint: {prefix} lacks {', '.join(missing)}")
    waiting: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        prefix, _, part = name.rpartition(".")
        if part not in _PARTS or prefix not in expected:
            yield name, tensor
            continue
        parts = waiting.setdefault(prefix, {})
        parts[part] = tensor
        if len(parts) == len(expected[prefix]):
            yield f"{prefix}.weight", dequantize(waiting.pop(prefix), fmt, dtype)
    if waiting:
        raise ValueError(f"GPTQ checkpoint: {len(waiting)} linear(s) incomplete, e.g. {next(iter(waiting))}")
