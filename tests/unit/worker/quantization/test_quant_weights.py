"""Quantize/dequantize maths and the packed layouts, on CPU."""

from __future__ import annotations

import pytest
import torch

from fms_worker.quantization.fp8 import quantize_fp8_rows
from fms_worker.quantization.int4 import dequantize_int4, pack_nibbles, quantize_int4, unpack_nibbles
from fms_worker.quantization.int8 import dequantize_int8, quantize_int8
from fms_worker.quantization.sparse24 import is_24_sparse, prune_24


def _weight(n=96, k=256, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def test_int8_error_is_at_most_half_a_step():
    w = _weight()
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    err = (dequantize_int8(q, scale) - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-6).all()
    # the largest weight of each row maps to +-127 exactly
    assert (q.abs().amax(dim=1) == 127).all()


@pytest.mark.parametrize("group", [64, 128])
def test_int4_error_is_at_most_half_a_step(group):
    w = _weight()
    q, scale, zero = quantize_int4(w, group)
    assert q.min() >= 0 and q.max() <= 15
    assert scale.shape == zero.shape == (256 // group, 96)
    deq = dequantize_int4(q, scale, zero, group)
    step = scale.t().repeat_interleave(group, dim=1)  # [N, K]
    assert ((deq - w).abs() <= step / 2 + 1e-5).all()


@pytest.mark.parametrize("extreme", [-8, 7])
def test_int4_keeps_a_symmetric_grid(extreme):
    """Weights on a symmetric int4 grid (codes -8..7 times a scale per group, as a W4A16 checkpoint stores
    them) come back exactly, whether a group's largest magnitude is code -8 or 7; an asymmetric grid would
    round most groups again."""
    gen = torch.Generator().manual_seed(extreme)
    codes = torch.randint(-7, 7, (16, 4, 64), generator=gen).float()
    codes[..., 0] = extreme
    step = 2.0 ** -torch.randint(4, 9, (16, 4, 1), generator=gen).float()
    w = (codes * step).reshape(16, 256)
    q, scale, zero = quantize_int4(w, 64)
    assert torch.equal(dequantize_int4(q, scale, zero, 64), w)
    assert torch.equal(scale.t(), step.squeeze(-1)) and not zero.any()


def test_int4_constant_group_is_exact():
    w = torch.full((8, 64), 0.25)
    q, scale, zero = quantize_int4(w, 64)
    assert torch.allclose(dequantize_int4(q, scale, zero, 64), w)


def test_nibble_packing_round_trips():
    q = torch.randint(0, 16, (8, 128), dtype=torch.int32)
    packed = pack_nibbles(q, 32)
    assert packed.shape == (8, 64) and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed, 32), q)
    # group 0: byte 0 = column 0 (low) + column 16 (high); group 1 starts at byte 16 with column 32
    assert packed[0, 0] == q[0, 0] + q[0, 16] * 16 and packed[0, 16] == q[0, 32] + q[0, 48] * 16


def test_fp8_rows_scale_each_row_to_the_fp8_range():
    x = _weight(4, 64) * torch.tensor([[1.0], [10.0], [1e-3], [300.0]])
    q, scale = quantize_fp8_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (4, 1)
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((4,), 448.0))
    rel = ((q.float() * scale - x).abs() / x.abs().amax(dim=1, keepdim=True)).max()
    assert rel < 0.07  # e4m3 keeps 3 mantissa bits: relative step 1/16


def test_prune_24_keeps_the_two_largest_of_four():
    w = torch.tensor([[1.0, -5.0, 3.0, 0.5, 0.0, 0.0, 0.0, 2.0]])
    p = prune_24(w)
    assert torch.equal(p, torch.tensor([[0.0, -5.0, 3.0, 0.0, 0.0, 0.0, 0.0, 2.0]]))
    assert is_24_sparse(p)
    assert not is_24_sparse(w)
    assert is_24_sparse(prune_24(_weight()))
