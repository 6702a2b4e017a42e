"""Collectives over the tensor-parallel group; identities when it has one rank."""

from __future__ import annotations

import torch

from fms_worker.parallel.state import get_parallel_state


def tp_all_reduce(x: torch.Tensor) -> torch.Tensor:
    state = get_parallel_state()
    if state.tp_size == 1:
        return x
    if state.one_shot is not None and state.one_shot.fits(x):
        return state.one_shot(x)
    import torch.distributed as dist

    dist.all_reduce(x, group=state.group)
    return x


def tp_fused_reduce_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                 parity: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(RMSNorm of s, s) with s = x summed over the ranks + residual, in one kernel (parallel/reduce_norm.py);
    None where that kernel is off or x does not fit it. `parity` alternates between consecutive calls."""
    state = get_parallel_state()
    if state.tp_size == 1 or state.reduce_norm is None or not state.reduce_norm.fits(x):
        return None
    return state.reduce_norm(x, residual, weight, eps, parity)


def tp_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    state = get_parallel_state()
    if state.tp_size == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(state.tp_size)]
    dist.all_gather(parts, x.contiguous(), group=state.group)
    return torch.cat(parts, dim=dim)


def tp_tree_sum(x: torch.Tensor) -> torch.Tensor:
    """Every rank's float32 subtotal added as the top of a binary tree in rank order (kernels/tree_matmul):
    what one GPU adds last in its own tree, so the sum does not depend on the degree."""
    if get_parallel_state().tp_size == 1:
        return x
    from fms_worker.kernels.tree_matmul import tree_sum

    return tree_sum(tp_all_gather(x.unsqueeze(0), dim=0))  # [tp, ...] in rank order
