"""Reading 4-bit GPTQ checkpoints (the AutoGPTQ / GPTQModel / optimum layout).

    P.qweight  [K/8, N] int32   eight 4-bit codes along K per word, lowest bits first
    P.qzeros   [K/G, N/8] int32 eight 4-bit zero points along N per word
    P.scales   [K/G, N] float16
    P.g_idx    [K] int32        group of each input column (act-order checkpoints permute it)

and w[n, k] = (q[k, n] - z[g, n]) * s[g, n] with g = g_idx[k]. The original
("gptq", v1) format stores every zero point minus one (a zero of 0 wraps to 15);
"gptq_v2" stores it as is. The loader reads it through packed.dense_view: with
`precision.quantization: int4` and the checkpoint's group size the weights land
on the same 4-bit grid again; with no quantization the model runs dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fms_worker.quantization.packed import LinearParts, unpack_int4


@dataclass(frozen=True)
class GPTQFormat(LinearParts):
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
        return cls(int(qc.get("group_size", 128)), 1 if version == "gptq" else 0)

    def dequantize(self, parts: dict[str, torch.Tensor], dtype: torch.dtype, prefix: str = "") -> torch.Tensor:
        q = unpack_int4(parts["qweight"], dim=0)  # [K, N]
        zeros = (unpack_int4(parts["qzeros"], dim=1) + self.zero_offset) & 0xF  # [K/G, N]
        scales = parts["scales"].float()  # [K/G, N]
        g_idx = parts.get("g_idx")
        groups = g_idx.long() if g_idx is not None else torch.arange(q.shape[0]) // self.group_size
        w = (q - zeros[groups]).float() * scales[groups]  # [K, N]
        return w.t().contiguous().to(dtype)
