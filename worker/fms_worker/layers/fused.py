"""Elementwise chains that torch.compile fuses into one kernel each on CUDA.

Eager PyTorch runs an RMSNorm as five kernels and rotary as about eight; at
decode batch sizes each is a few microseconds of launch and memory round
trips per layer. On CUDA (and unless enforce_eager) the runner calls
`enable()` and these functions run compiled, with dynamic token counts so
one compilation serves every batch size. Elsewhere they run eagerly, so CPU
and GPU compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fms_worker.kernels import rms_norm as norm_rows
from fms_worker.layers.quantized_rows import InputFormat, QuantizedRows

_enabled = False
_compiled: dict[str, object] = {}


def enable(on: bool = True, deterministic: bool = False) -> None:
    """deterministic (tree mode): Inductor picks each reduction's tile by rule instead of by timing it on the
    GPU, so every process compiles the same kernels. Timed choices differed between two processes of the
    same engine and changed one sequence's logprobs (docs/benchmarks.md)."""
    global _enabled
    _enabled = on
    if on and deterministic:
        import torch._inductor.config

        torch._inductor.config.deterministic = True


def is_enabled() -> bool:
    """Whether fused kernels run (CUDA, not enforce_eager): also the switch of the hand-written ones."""
    return _enabled


def maybe_compiled(name: str, fn):
    """`fn` compiled once under `name` when enabled (CUDA, not enforce_eager); else `fn` itself."""
    if not _enabled:
        return fn
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _compiled[name]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    x = x + residual
    return _rms_norm(x, weight, eps), x


def _silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)  # [T, 2I] -> 2 x [T, I]
    return F.silu(gate) * up


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    c = cos[positions].unsqueeze(1).to(q.dtype)  # [T, 1, D]
    s = sin[positions].unsqueeze(1).to(q.dtype)
    return q * c + _rotate_half(q) * s, k * c + _rotate_half(k) * s


def rms_norm(x, weight, eps):
    if _enabled and norm_rows.ON and norm_rows.supported(x, weight):  # FMS_DECODE_NORM=triton (experiment)
        return norm_rows.rms_norm_rows(x, weight, eps)
    return maybe_compiled("rms_norm", _rms_norm)(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    if _enabled and norm_rows.ON and norm_rows.supported(x, weight, residual):
        return norm_rows.rms_norm_rows(x, weight, eps, residual)
    return maybe_compiled("add_rms_norm", _add_rms_norm)(x, residual, weight, eps)


def silu_and_mul(x):
    return maybe_compiled("silu_and_mul", _silu_and_mul)(x)


def rms_norm_into(fmt: InputFormat, x, weight, eps) -> QuantizedRows:
    """rms_norm written in a linear method's input format, in the same compiled kernel(s)."""
    def fn(x, weight, eps):
        return fmt.quantize(_rms_norm(x, weight, eps).reshape(-1, x.shape[-1]))

    return QuantizedRows(tuple(maybe_compiled(f"rms_norm+{fmt.name}", fn)(x, weight, eps)), x.shape, x.dtype)


def add_rms_norm_into(fmt: InputFormat, x, residual, weight, eps) -> tuple[QuantizedRows, torch.Tensor]:
    """add_rms_norm with the normed rows written in a linear method's input format."""
    def fn(x, residual, weight, eps):
        h, r = _add_rms_norm(x, residual, weight, eps)
        return (*fmt.quantize(h.reshape(-1, h.shape[-1])), r)

    *parts, r = maybe_compiled(f"add_rms_norm+{fmt.name}", fn)(x, residual, weight, eps)
    return QuantizedRows(tuple(parts), x.shape, x.dtype), r


def silu_and_mul_into(fmt: InputFormat, x) -> QuantizedRows:
    """silu_and_mul written in a linear method's input format."""
    def fn(x):
        return fmt.quantize(_silu_and_mul(x).reshape(-1, x.shape[-1] // 2))

    shape = torch.Size((*x.shape[:-1], x.shape[-1] // 2))
    return QuantizedRows(tuple(maybe_compiled(f"silu_and_mul+{fmt.name}", fn)(x)), shape, x.dtype)


def rope(positions, q, k, cos, sin):
    return maybe_compiled("rope", _rope)(positions, q, k, cos, sin)
