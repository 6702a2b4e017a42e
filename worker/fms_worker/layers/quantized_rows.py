"""Activations already in a linear method's own input format, made by the layer before it.

A method that quantizes its input on the fly (fp8 W8A8: per-token scales) runs one pass over the
activations per linear layer. Where the layer before is itself a compiled elementwise kernel (the
RMSNorm before the QKV and gate-up projections, the gated activation before the down projection), that
kernel can write the method's format directly: `LinearMethod.input_format` names it, the producer runs
`InputFormat.quantize` inside its own compiled function (`layers/fused.py`), and the method's `apply`
takes the `QuantizedRows` it made instead of a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class InputFormat:
    name: str  # names the compiled producer+format functions
    quantize: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # rows [M, K] -> the method's parts


@dataclass(frozen=True)
class QuantizedRows:
    parts: tuple[torch.Tensor, ...]  # what InputFormat.quantize returned, e.g. (fp8 [M, K], scale [M, 1])
    shape: torch.Size  # the activations' shape [..., K]
    dtype: torch.dtype  # the activations' dtype, which the method's output keeps
