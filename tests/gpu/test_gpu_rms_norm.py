"""On the GPU: the decode-rows RMSNorm kernel (kernels/rms_norm.py, FMS_DECODE_NORM=triton) against the compiled
functions it replaces, eagerly and replayed from a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels.rms_norm import rms_norm_rows, supported
from fms_worker.layers import fused

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _steps(got: torch.Tensor, ref: torch.Tensor, mantissa_bits: int) -> float:
    step = ref.float().abs().clamp_min(1e-3) / 2 ** mantissa_bits
    return ((got.float() - ref.float()).abs() / step).max().item()


@pytest.mark.parametrize("dtype,bits", [(torch.bfloat16, 7), (torch.float16, 10)])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_matches_the_compiled_norms(dtype, bits, rows):
    g = torch.Generator(device=CUDA).manual_seed(rows)
    x, residual = (torch.randn(rows, 4096, device=CUDA, generator=g).to(dtype) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(4096, device=CUDA, generator=g)).to(dtype)
    assert supported(x, weight, residual)
    before = fused.is_enabled()
    fused.enable(True)
    try:
        ref_normed, ref_res = fused.maybe_compiled("add_rms_norm", fused._add_rms_norm)(x, residual, weight, 1e-5)
        ref_plain = fused.maybe_compiled("rms_norm", fused._rms_norm)(x, weight, 1e-5)
    finally:
        fused.enable(before)
    normed, res = rms_norm_rows(x, weight, 1e-5, residual)
    assert torch.equal(res, ref_res)
    assert _steps(normed, ref_normed, bits) <= 1
    assert _steps(rms_norm_rows(x, weight, 1e-5), ref_plain, bits) <= 1
    # replayed from a CUDA graph (as decode steps run it), on new inputs
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_normed, g_res = rms_norm_rows(x, weight, 1e-5, residual)
    x.copy_(residual)
    residual.copy_(ref_res)
    graph.replay()
    torch.cuda.synchronize()
    eager_normed, eager_res = rms_norm_rows(x, weight, 1e-5, residual)
    assert torch.equal(g_res, eager_res) and torch.equal(g_normed, eager_normed)
