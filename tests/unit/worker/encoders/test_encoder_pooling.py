"""Pooling modes against straightforward float32 reference formulas."""

from __future__ import annotations

import pytest
import torch

from fms_worker.encoders.pooling import pool

H = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])


def reference(mode: str, i: int) -> torch.Tensor:
    rows = H[i, : int(MASK[i].sum())]
    return {"cls": rows[0], "max": rows.amax(0), "mean": rows.mean(0),
            "mean_sqrt_len": rows.sum(0) / len(rows) ** 0.5}[mode]


@pytest.mark.parametrize("mode", ["cls", "max", "mean", "mean_sqrt_len"])
def test_pool_modes_with_padding(mode):
    got = pool(H, MASK, mode)
    for i in range(3):
        torch.testing.assert_close(got[i], reference(mode, i))


@pytest.mark.parametrize("mode", ["cls", "max", "mean", "mean_sqrt_len"])
def test_no_mask_equals_all_ones(mode):
    torch.testing.assert_close(pool(H, None, mode), pool(H, torch.ones(3, 5, dtype=torch.long), mode))


def test_unknown_mode():
    with pytest.raises(ValueError, match="lasttoken"):
        pool(H, MASK, "lasttoken")
