"""Tree-mode matmuls (precision.tp_invariant): the same float32 sums however K is split over ranks.

The CPU path (torch.mv per row and slice) and the Triton kernel (through Triton's interpreter, float32:
the interpreter has no bf16 dot) are checked for what tensor parallelism needs: a row-parallel layer's
per-rank subtotals, added by `tree_sum`, equal one process's full tree bit for bit at degrees 2, 4 and 8;
a column slice of the outputs and a subset of the rows equal the full result's; rounding the float32 sum
to bf16 in the kernel equals rounding it afterwards. The config refuses what the mode cannot do.
"""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import PrecisionConfig, WorkerConfig
from fms_worker.kernels import tree_matmul as tm


def _inputs(dtype, m=6, n=48, k=256):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(m, k, generator=gen).to(dtype), torch.randn(n, k, generator=gen).to(dtype)


def _rank_subtotals(x, w, degree, matmul):
    k = x.shape[1] // degree
    return torch.stack([matmul(x[:, r * k:(r + 1) * k], w[:, r * k:(r + 1) * k], tm.SLICES // degree, torch.float32)
                        for r in range(degree)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reference_subtotals_of_every_degree_add_up_to_one_process(dtype):
    x, w = _inputs(dtype)
    full = tm.tree_matmul_reference(x, w, tm.SLICES, torch.float32)
    for degree in (2, 4, 8):
        assert torch.equal(tm.tree_sum(_rank_subtotals(x, w, degree, tm.tree_matmul_reference)), full), degree
    assert torch.equal(tm.tree_matmul_reference(x, w[5:29], tm.SLICES, torch.float32), full[:, 5:29])
    assert torch.equal(tm.tree_matmul_reference(x[3:4], w, tm.SLICES, torch.float32), full[3:4])
    exact = x.double() @ w.double().T
    assert ((full.double() - exact).abs().max() / exact.abs().max()) < 1e-6  # a sum, in another order
    assert tm.tree_matmul(x, w).dtype == dtype and torch.equal(tm.tree_matmul(x, w), full.to(dtype))


def test_the_plain_split_is_not_invariant_in_bf16():
    """Why the tree: rounding each rank's partial sum to bf16 and adding them, as a plain row-parallel layer
    does, differs from one process's matmul."""
    x, w = _inputs(torch.bfloat16)
    one = (x.float() @ w.float().T).to(torch.bfloat16)
    two = (x[:, :128].float() @ w[:, :128].float().T).to(torch.bfloat16) + \
        (x[:, 128:].float() @ w[:, 128:].float().T).to(torch.bfloat16)
    assert not torch.equal(one, two)


def test_tree_sum_adds_pairs_then_pairs_of_pairs():
    # float32: 1e8 + 1 rounds to 1e8. The tree gives (1e8 + 1) + (-1e8 + 1) = 1e8 - 1e8 = 0; a left fold
    # ((1e8 + 1) - 1e8) + 1 would give 1.
    parts = torch.tensor([1e8, 1.0, -1e8, 1.0], dtype=torch.float32)
    assert tm.tree_sum(parts.view(4, 1)).item() == 0.0
    assert ((parts[0] + parts[1]) + parts[2]) + parts[3] == 1.0


def test_a_bad_split_is_refused():
    x, w = _inputs(torch.float32, k=100)
    with pytest.raises(ValueError, match="equal slices"):
        tm.tree_matmul(x, w)
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        tm.tree_matmul_reference(*_inputs(torch.float32), 3, torch.float32)


_KERNEL = r'''
import json
import numpy as np
import torch
import triton.runtime.interpreter as interp
from fms_worker.kernels import tree_matmul as tm

# The interpreter's tl.dot is numpy's float32 matmul, whose BLAS may sum an output in an order that depends on
# its column's place in the tile (it does on the AMD EPYC development machine, which CI's resembles), where a
# tensor-core tile adds each output the same way wherever it sits. So that the "columns" check below tests the
# kernel, not the BLAS, each float32 tile product here is the float32 rounding of its float64 one: a function
# of its own row and column.
_dot = interp.InterpreterBuilder.create_dot
def _create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
    if a.data.dtype == np.float32 and b.data.dtype == np.float32:
        product = (a.data.astype(np.float64) @ b.data.astype(np.float64)).astype(np.float32)
        return interp.TensorHandle(product + d.data, d.dtype.scalar)
    return _dot(self, a, b, d, input_precision, max_num_imprecise_acc)
interp.InterpreterBuilder.create_dot = _create_dot

gen = torch.Generator().manual_seed(0)
x = torch.randn(5, 192, generator=gen)
w = torch.randn(40, 192, generator=gen)  # 40 outputs: a partial 32-wide tile; slices of 24 < the 64-wide K step
full = tm.triton_tree_matmul(x, w, 8, torch.float32)
exact = x.double() @ w.double().T
res = {"err": float((full.double() - exact).abs().max() / exact.abs().max()),
       "reference": bool(torch.allclose(full, tm.tree_matmul_reference(x, w, 8, torch.float32), rtol=1e-5, atol=1e-5))}
for d in (2, 4, 8):
    k = 192 // d
    subs = torch.stack([tm.triton_tree_matmul(x[:, r * k:(r + 1) * k], w[:, r * k:(r + 1) * k], 8 // d, torch.float32)
                        for r in range(d)])
    res[f"degree {d}"] = bool(torch.equal(tm.tree_sum(subs), full))
res["columns"] = bool(torch.equal(tm.triton_tree_matmul(x, w[7:29], 8, torch.float32), full[:, 7:29]))
res["rows"] = bool(torch.equal(tm.triton_tree_matmul(x[2:3], w, 8, torch.float32), full[2:3]))
res["rounded"] = bool(torch.equal(tm.triton_tree_matmul(x, w, 8, torch.float16), full.to(torch.float16)))
print(json.dumps(res))
'''


def test_kernel_subtotals_of_every_degree_add_up_to_one_process(triton_interpret):
    res = triton_interpret(_KERNEL)
    assert res.pop("err") < 1e-6, res
    assert all(res.values()), res


def test_config_refuses_tp_invariant_with_quantization_or_a_degree_it_cannot_split():
    with pytest.raises(ValueError, match="tp_invariant runs unquantized dense weights"):
        PrecisionConfig(tp_invariant=True, quantization="int8")
    with pytest.raises(ValueError, match="tensor degree 1, 2, 4 or 8, not 3"):
        WorkerConfig.model_validate({"model": {"path": "/m"}, "precision": {"tp_invariant": True},
                                     "parallel": {"tensor": 3}})
    assert WorkerConfig.model_validate({"model": {"path": "/m"}, "precision": {"tp_invariant": True},
                                        "parallel": {"tensor": 4}}).precision.tp_invariant
