"""The tree-mode kernel (precision.tp_invariant) on the GPU, bf16, Llama-3.1-8B's layer shapes: each
degree's per-rank subtotals, added by the tree, equal one GPU's result bit for bit; so do column slices,
single rows (decode) and the in-kernel rounding; and the result is a matmul (close to float32's)."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels import tree_matmul as tm

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.mark.parametrize("n,k", [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)])
@pytest.mark.parametrize("m", [1, 37, 300])
def test_subtotals_of_every_degree_are_one_gpus_sum(n, k, m):
    gen = torch.Generator(device=CUDA).manual_seed(m)
    x = torch.randn(m, k, device=CUDA, generator=gen).to(torch.bfloat16)
    w = (torch.randn(n, k, device=CUDA, generator=gen) * k ** -0.5).to(torch.bfloat16)
    full = tm.triton_tree_matmul(x, w, tm.SLICES, torch.float32)
    exact = x.float() @ w.float().T
    assert ((full - exact).norm() / exact.norm()).item() < 1e-5
    for degree in (2, 4, 8):
        width = k // degree
        subs = torch.stack([tm.triton_tree_matmul(x[:, r * width:(r + 1) * width], w[:, r * width:(r + 1) * width],
                                                  tm.SLICES // degree, torch.float32) for r in range(degree)])
        assert torch.equal(tm.tree_sum(subs), full), degree
    cols = slice(n // 4, n // 2)
    assert torch.equal(tm.triton_tree_matmul(x, w[cols], tm.SLICES, torch.float32), full[:, cols])
    assert torch.equal(tm.triton_tree_matmul(x[m // 2:m // 2 + 1], w, tm.SLICES, torch.float32), full[m // 2:m // 2 + 1])
    assert torch.equal(tm.tree_matmul(x, w), full.to(torch.bfloat16))
