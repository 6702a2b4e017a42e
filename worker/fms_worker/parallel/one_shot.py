"""One-shot all-reduce over symmetric memory, for the small messages of decode steps.

A decode step of an 8B model under tensor parallelism makes 64 all-reduces of
a few kilobytes. Inside a CUDA graph on an H200 x4, NCCL took 7.5 us (TP=2) and
10.6 us (TP=4) for each 8 KiB one, this kernel 6.7 and 7.5 us
(bench/all_reduce_gpu.py; docs/benchmarks.md). PyTorch's
symmetric memory maps every rank's buffer into every other rank's address
space over NVLink P2P; its one-shot kernel copies the local input into this
rank's buffer, waits on a barrier, and reads and sums all ranks' buffers
directly. No NVLink multicast is involved (the lent machines forbid it).

Messages larger than the buffer, other dtypes, CPU tensors and messages whose byte size is not a
multiple of 4 (the kernel refuses them: an odd count of bf16 values) keep NCCL/gloo.
Capturable in CUDA graphs (the barrier lives in the buffer's signal pad). The
worker sizes the buffer for its largest decode graph, so no NCCL operation is
ever captured (see model_runner/cuda_graphs.py for why that matters).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

MAX_BYTES = 512 * 1024  # the smallest buffer; the worker grows it to its largest decode graph's message


def symmetric_buffer(group, device: torch.device, numel: int, dtype: torch.dtype, unavailable: str):
    """(buffer of `numel` values in PyTorch symmetric memory, its rendezvous handle over `group`): a collective,
    every rank calls it. None off CUDA, or where symmetric memory fails (logged after `unavailable`)."""
    if device.type != "cuda":
        return None
    try:
        import torch.distributed._symmetric_memory as symm_mem

        buffer = symm_mem.empty(numel, dtype=dtype, device=device)
        return buffer, symm_mem.rendezvous(buffer, group)
    except Exception as exc:  # noqa: BLE001 - optional fast paths; NCCL and the compiled kernels stay correct
        log.warning("%s: %s", unavailable, exc)
        return None


class OneShotAllReduce:
    def __init__(self, buffer: torch.Tensor, group_name: str):
        self.buffer, self.group_name = buffer, group_name  # buffer: symmetric, [max_bytes / itemsize]

    @classmethod
    def create(cls, group, device: torch.device, dtype: torch.dtype, max_bytes: int = MAX_BYTES):
        """A collective over `group` (every rank must call it); None where symmetric memory is unavailable."""
        made = symmetric_buffer(group, device, max_bytes // dtype.itemsize, dtype,
                                "one-shot all-reduce unavailable, using NCCL for every all-reduce")
        return cls(made[0], group.group_name) if made is not None else None

    def fits(self, x: torch.Tensor) -> bool:
        return (x.is_cuda and x.dtype == self.buffer.dtype and x.numel() <= self.buffer.numel()
                and x.numel() * x.element_size() % 4 == 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        view = self.buffer[: x.numel()].view_as(x)
        torch.ops.symm_mem.one_shot_all_reduce_copy_out(view, x, "sum", self.group_name, out)
        return out
