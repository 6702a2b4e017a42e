"""All-reduce + residual add + RMSNorm as one kernel over symmetric memory (kernels/all_reduce_norm.py).

The tensor-parallel decoder layer hands its row-parallel projections' partial
sums straight to the next norm; where this is on, the norm's kernel does the
all-reduce too. Same limits as the one-shot all-reduce (parallel/one_shot.py):
CUDA, one pipeline stage, messages up to the largest decode graph's. Larger
messages (long prefills) keep the all-reduce and the compiled add+norm.
The kernel's push variant (each rank writes its rows into every rank's buffer,
then reads locally) is the default for two and four ranks, where it was measured
faster than pulling the peers' rows (docs/benchmarks.md); other degrees keep the
pull variant until push is measured there. `FMS_FUSED_NORM` in the worker's
environment: `0` off, `pull` or `push` to choose, unset (or `1`) by the degree;
`ll` (experiment, not yet measured) pushes words that carry their own flags
(kernels/all_reduce_norm_ll.py).
"""

from __future__ import annotations

import logging
import os

import torch

from fms_worker.parallel.one_shot import symmetric_buffer

log = logging.getLogger(__name__)

ENV_SWITCH = "FMS_FUSED_NORM"
PUSH_WORLDS = (2, 4)  # degrees where push was measured faster than pull (H200, bench/reduce_norm_gpu.py)


def max_rows(world: int, push: bool = False) -> int:  # push: also the LL variant, whose slots decide the rest
    """Rows up to which the fused kernel beat the one-shot all-reduce + compiled add+norm on H200s
    (bench/reduce_norm_gpu.py, hidden 4096). Pull: up to 64 of 2 ranks, 8 of 4; each program's flag exchange
    with every peer costs more as both grow, so 128 / world^2: 32 for 2 ranks, 8 for 4, 2 for 8. Push on 2
    ranks: 64 rows took 6.9 us against 14.5, on 4 ranks 12.8 against 16.9 (more rows were not measured)."""
    if push and world in PUSH_WORLDS:
        return 64
    return max(1, 128 // world ** 2)


def mode_from_env(world: int) -> str | None:
    """None (off), "pull", "push" or "ll" for `world` ranks: by default push for two and four (measured faster at
    every row count there), pull for more (push not measured there)."""
    value = os.environ.get(ENV_SWITCH, "1")
    if value in ("0", "pull", "push", "ll"):
        return None if value == "0" else value
    return "push" if world in PUSH_WORLDS else "pull"


class AllReduceAddNorm:
    def __init__(self, buffer: torch.Tensor, buf_ptrs: torch.Tensor, sig_ptrs: torch.Tensor, rank: int, world: int,
                 push: bool = False, epochs: torch.Tensor | None = None):
        from fms_worker.kernels import all_reduce_norm, all_reduce_norm_ll

        self.buffer, self.buf_ptrs, self.sig_ptrs = buffer, buf_ptrs, sig_ptrs  # buffer: symmetric, two halves
        self.rank, self.world, self.push = rank, world, push
        self.epochs = epochs  # the LL variant's counters (its buffer zeroed), else None
        self.half = buffer.numel() // 2
        if epochs is not None:
            self.capacity = all_reduce_norm_ll.capacity(self.half, world, buffer.element_size())
        else:
            self.capacity = all_reduce_norm.slot_size(self.half, world, push)  # values of one call
        self.max_rows = max_rows(world, push or epochs is not None)
        self._kernel = all_reduce_norm.reduce_add_rms_norm
        self._ll_kernel = all_reduce_norm_ll.reduce_add_rms_norm_ll

    @classmethod
    def create(cls, group, device: torch.device, dtype: torch.dtype, max_bytes: int, push: bool = False,
               ll: bool = False):
        """A collective over `group` (every rank must call it); None where symmetric memory is unavailable.
        ll: the variant whose words carry their flags (its buffer is zeroed, then the ranks meet)."""
        half = -(-max_bytes // dtype.itemsize // 64) * 64  # 16-byte aligned halves (the kernel assumes so)
        unavailable = "fused all-reduce + RMSNorm unavailable"
        made = symmetric_buffer(group, device, 2 * half, dtype, unavailable)
        if made is None:
            return None
        buffer, handle = made
        import torch.distributed._symmetric_memory as symm_mem

        from fms_worker.kernels.all_reduce_norm import MAX_PROGRAMS

        need = 2 * MAX_PROGRAMS.value * handle.world_size * 4
        if symm_mem.get_signal_pad_size() < need:
            log.warning("%s: signal pads of %d bytes, %d needed", unavailable, symm_mem.get_signal_pad_size(), need)
            return None
        ptrs = [torch.tensor(p, dtype=torch.int64, device=device) for p in (handle.buffer_ptrs, handle.signal_pad_ptrs)]
        epochs = None
        if ll:  # no peer may write its first words before this rank has zeroed the buffer they land in
            import torch.distributed as dist

            buffer.zero_()
            epochs = torch.zeros(2 * MAX_PROGRAMS.value, dtype=torch.int32, device=device)
            torch.cuda.synchronize(device)
            dist.barrier(group)
        return cls(buffer, *ptrs, handle.rank, handle.world_size, push, epochs)

    def fits(self, x: torch.Tensor) -> bool:
        return (x.is_cuda and x.dtype == self.buffer.dtype and x.dim() == 2 and x.shape[0] <= self.max_rows
                and x.numel() <= self.capacity and (self.epochs is None or x.shape[1] * x.element_size() % 4 == 0))

    def __call__(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                 parity: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.epochs is not None:
            return self._ll_kernel(x.contiguous(), residual.contiguous(), weight, eps, self.buf_ptrs, self.epochs,
                                   self.rank, self.world, self.half, parity)
        return self._kernel(x.contiguous(), residual.contiguous(), weight, eps, self.buf_ptrs, self.sig_ptrs,
                            self.rank, self.world, self.half, parity, self.push)
