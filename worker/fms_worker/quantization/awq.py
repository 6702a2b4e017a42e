"""Reading 4-bit AWQ checkpoints (AutoAWQ's "gemm" layout).

    P.qweight  [K, N/8] int32   eight 4-bit codes along N per word, interleaved
    P.qzeros   [K/G, N/8] int32 zero points, packed the same way
    P.scales   [K/G, N] float16

and w[n, k] = (q[k, n] - z[g, n]) * s[g, n] with g = k // G. Within a word, the
i-th 4-bit field (lowest bits first) holds column 8c + ORDER[i]. The loader
reads it through packed.dense_view, like GPTQ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fms_worker.quantization.packed import LinearParts, pack_int4, unpack_int4

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field i of a word holds column 8c + ORDER[i]
_NATURAL = torch.tensor([ORDER.index(j) for j in range(8)])  # column 8c + j sits in field _NATURAL[j]


def unpack_columns(words: torch.Tensor) -> torch.Tensor:
    """[R, C/8] int32 -> [R, C] codes in column order."""
    fields = unpack_int4(words, dim=1).reshape(words.shape[0], -1, 8)  # [R, C/8, 8] in field order
    return fields[..., _NATURAL].reshape(words.shape[0], -1)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """The inverse of unpack_columns (tests and checkpoint writers)."""
    cols = values.reshape(values.shape[0], -1, 8)[..., list(ORDER)]  # field i <- column ORDER[i]
    return pack_int4(cols.reshape(values.shape[0], -1), dim=1)


@dataclass(frozen=True)
class AWQFormat(LinearParts):
    group_size: int

    @classmethod
    def from_config(cls, qc: dict) -> "AWQFormat":
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        version = str(qc.get("version", "gemm")).lower()
        if bits != 4 or version != "gemm" or not qc.get("zero_point", True):
            raise ValueError(f"AWQ checkpoints load in the 4-bit 'gemm' layout with zero points only; this one has "
                             f"bits {bits}, version {version!r}, zero_point {qc.get('zero_point', True)}")
        return cls(int(qc.get("group_size", qc.get("q_group_size", 128))))

    def dequantize(self, parts: dict[str, torch.Tensor], dtype: torch.dtype, prefix: str = "") -> torch.Tensor:
        q = unpack_columns(parts["qweight"])  # [K, N]
        zeros = unpack_columns(parts["qzeros"])  # [K/G, N]
        scales = parts["scales"].float()  # [K/G, N]
        groups = torch.arange(q.shape[0]) // self.group_size
        w = (q - zeros[groups]).float() * scales[groups]  # [K, N]
        return w.t().contiguous().to(dtype)
