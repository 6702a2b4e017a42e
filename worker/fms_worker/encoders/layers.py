"""Linear layers shared by the encoder models, with the int8 scheme living in the layer itself.

int8 here is weight-only, symmetric, per output channel: weights are stored as
int8 plus one fp scale per row and dequantized right before the matmul. It
quarters weight memory on every device and needs no calibration data; it does
not speed up the matmul itself (activations stay in the compute dtype).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LinearFactory = Callable[[int, int], nn.Module]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class Int8Linear(nn.Module):
    """y = x @ (q * scale)^T + b, with q int8 [out, in] and scale [out]; loads from a float `weight`."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        w = weight.float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.qweight.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.scale.copy_(scale)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # Checkpoints carry a float `weight`; quantize it on the way in (the weight loader lives in the layer).
        key = prefix + "weight"
        if key in state_dict:
            self.set_weight(state_dict.pop(key))
            state_dict.setdefault(prefix + "qweight", self.qweight)
            state_dict.setdefault(prefix + "scale", self.scale)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))


def linear_factory(quantization: str) -> LinearFactory:
    if quantization == "none":
        return lambda i, o: nn.Linear(i, o)
    if quantization == "int8":
        return Int8Linear
    raise ValueError(f"precision.quantization {quantization!r} is not supported for encoders; use none or int8")


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S] 1/0 mask -> boolean [B, 1, 1, S] that SDPA broadcasts over heads and query positions."""
    return attention_mask.bool()[:, None, None, :]
