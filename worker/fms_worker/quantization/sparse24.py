"""2:4 semi-structured sparsity: for checkpoints already pruned so that every run of four input
weights holds at most two non-zeros. On CUDA the weight is compressed with
`torch.sparse.to_sparse_semi_structured` (CUTLASS / cuSPARSELt kernels, fp16/bf16) and
`F.linear` dispatches to the sparse GEMM. There is no CPU kernel: on CPU the (validated)
weight stays dense, so results are the same and only the speed differs.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

from fms_worker.quantization.staged import StagedLinearMethod, set_param

log = logging.getLogger(__name__)


def is_24_sparse(weight: torch.Tensor) -> bool:
    n, k = weight.shape
    if k % 4:
        return False
    return bool(((weight.reshape(n, k // 4, 4) != 0).sum(-1) <= 2).all())


def prune_24(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest-magnitude weights of every four (for tests and benchmarks; real
    checkpoints come pruned and fine-tuned)."""
    n, k = weight.shape
    w = weight.reshape(n, k // 4, 4)
    keep = w.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True)
    return (w * mask).reshape(n, k)


class Sparse24LinearMethod(StagedLinearMethod):
    _warned_cpu = False

    def convert(self, layer, weight):
        n, k = weight.shape
        if not is_24_sparse(weight):
            raise ValueError(
                f"precision.sparsity is 2:4 but a [{n}, {k}] weight is not 2:4 sparse (some run of 4 input weights "
                "has more than 2 non-zeros); use a checkpoint pruned to 2:4 or set sparsity none"
            )
        if weight.device.type != "cuda":
            if not Sparse24LinearMethod._warned_cpu:
                log.info("2:4 sparsity has no CPU kernel; the validated weights run dense on CPU")
                Sparse24LinearMethod._warned_cpu = True
            set_param(layer, "weight", weight)
            return
        if weight.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"2:4 sparse kernels take float16 or bfloat16; set precision.dtype (got {weight.dtype})")
        if n % 64 or k % 64:
            raise ValueError(f"2:4 sparse kernels need weight dimensions divisible by 64; this layer is [{n}, {k}]")
        from torch.sparse import to_sparse_semi_structured

        with warnings.catch_warnings():  # torch marks the API "prototype" on every conversion
            warnings.filterwarnings("ignore", message="The PyTorch API of SparseSemiStructuredTensor")
            set_param(layer, "weight", to_sparse_semi_structured(weight))

    def apply(self, layer, x, bias):
        # The sparse kernel computes (W x^T)^T and returns that transposed view; kernels downstream
        # (paged attention) index rows by stride and expect the last dimension dense.
        return F.linear(x, layer.weight, bias).contiguous()
