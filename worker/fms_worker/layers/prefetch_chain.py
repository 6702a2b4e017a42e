"""Which weight each one-row matmul asks L2 for when it ends: the next one's in decode order (experiment).

`link(order)` gives each module of `order` (a model's matmuls in the order a decode step runs them; the LM
head last, whose successor is the first layer's first matmul of the next step) an `l2_next`: a
`kernels.l2_prefetch.Prefetch` of the next module's weight, as much of it as FMS_L2_PREFETCH_MB allows (MiB,
per link; 0 or unset: off). The methods' one-row GEMVs pass it on (layers/quant_method.py, quantization/int8.py,
quantization/int4.py, the LM head in layers/embedding.py). Modules whose GEMV reads no single weight tensor get
None, and so does a module before one of them.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from fms_worker.kernels.l2_prefetch import Prefetch

ENV = "FMS_L2_PREFETCH_MB"


def budget_from_env() -> int:
    """Bytes per link from FMS_L2_PREFETCH_MB (MiB, a number); 0 when unset."""
    value = os.environ.get(ENV, "0")
    try:
        mib = float(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: give a number of MiB (0 turns the prefetch off)") from None
    if mib < 0:
        raise ValueError(f"{ENV}={value!r}: give a number of MiB >= 0")
    return int(mib * 2**20)


def gemv_weight(module: nn.Module) -> torch.Tensor | None:
    """The tensor `module`'s one-row GEMV streams: its method's (`LinearMethod.gemv_weight`), or a plain LM
    head's weight."""
    method = getattr(module, "quant_method", None)
    if method is not None:
        return method.gemv_weight(module)
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def link(order: list[nn.Module], budget: int) -> int:
    """Set `l2_next` on every module of `order` (None where off); returns how many got a Prefetch."""
    made = 0
    for i, module in enumerate(order):
        nxt = order[(i + 1) % len(order)]
        weight = gemv_weight(nxt)
        pf = None
        if weight is not None and gemv_weight(module) is not None:
            pf = Prefetch.of(weight, budget, halves=getattr(nxt, "gated", False))
        module.l2_next = pf
        made += pf is not None
    return made
