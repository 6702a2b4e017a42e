"""CUDA graphs for decode steps, one per batch-size bucket.

A decode step of B sequences is replayed from the graph of the smallest
bucket >= B. Rows past B are padding: they read and write only the scratch
block (which the block pool never hands out), so they cannot disturb real
sequences, and their logits are dropped.

Under tensor parallelism no NCCL operation is captured: the all-reduces inside
go through symmetric memory (parallel/one_shot.py, its buffer sized for the
largest bucket), and the vocabulary all-gather of the logits runs eagerly after
the replay. NCCL documents that mixing graph-captured and eager operations on
one communicator relies on a mechanism that has deadlocked CUDA, and TP>1
offline runs here stalled exactly under that mix (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time

import torch

from fms_worker.kernels.paged_attention import num_splits_for
from fms_worker.layers.attention_triton import PagedAttentionMetadata
from fms_worker.model_runner.inputs import StepInputs

log = logging.getLogger(__name__)


def buckets_up_to(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 257, 16)) + list(range(288, 1025, 32))
    out = [b for b in sizes if b < max_batch]
    return out + [max_batch]


class DecodeGraphs:
    def __init__(self, model, *, max_batch: int, max_blocks_per_seq: int, block_size: int, scratch_block: int,
                 num_kv_heads: int, max_model_len: int, device: torch.device):
        self.model, self.block_size, self.scratch_block = model, block_size, scratch_block
        self.max_batch, self.max_blocks = max_batch, max_blocks_per_seq
        self.buckets = buckets_up_to(max_batch)
        self.split_len = max_model_len
        self.num_kv_heads = num_kv_heads
        i32 = dict(dtype=torch.int32, device=device)
        self.input_ids = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((max_batch,), scratch_block * block_size, dtype=torch.long, device=device)
        self.block_tables = torch.full((max_batch, max_blocks_per_seq), scratch_block, **i32)
        self.seq_lens = torch.ones(max_batch, **i32)
        self.query_start = torch.arange(max_batch + 1, **i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}

    def _meta(self, b: int) -> PagedAttentionMetadata:
        return PagedAttentionMetadata(
            slot_mapping=self.slot_mapping[:b], block_tables=self.block_tables[:b], seq_lens=self.seq_lens[:b],
            query_start=self.query_start[: b + 1], max_q_len=1,
            num_splits=num_splits_for(b, self.num_kv_heads, self.split_len), block_size=self.block_size,
        )

    def _forward(self, b: int) -> torch.Tensor:
        """This rank's logits slice: the vocabulary gather runs after the replay, outside the graph."""
        hidden = self.model(self.input_ids[:b], self.positions[:b], self._meta(b))
        return self.model.local_logits(hidden)

    @torch.inference_mode()
    def capture(self) -> float:
        t = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for b in reversed(self.buckets):  # largest first, so smaller graphs reuse its pool
                self._forward(b)  # warm-up: compiles kernels outside the capture
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool, stream=stream):
                    self.logits[b] = self._forward(b)
                self.graphs[b] = g
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        took = time.perf_counter() - t
        log.info("captured %d decode graphs (batch %d..%d) in %.1f s", len(self.buckets), self.buckets[0],
                 self.buckets[-1], took)
        return took

    def can_run(self, inputs: StepInputs) -> bool:
        meta = inputs.meta
        return (isinstance(meta, PagedAttentionMetadata) and meta.max_q_len == 1
                and meta.seq_lens.numel() <= self.max_batch and meta.block_tables.shape[1] <= self.max_blocks
                and inputs.logits_rows.numel() == meta.seq_lens.numel())

    def run(self, inputs: StepInputs) -> torch.Tensor:
        """Logits [B, V] of a pure decode step."""
        meta = inputs.meta
        n = meta.seq_lens.numel()
        b = next(x for x in self.buckets if x >= n)
        w = meta.block_tables.shape[1]
        self.input_ids[:n].copy_(inputs.input_ids)
        self.positions[:n].copy_(inputs.positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.slot_mapping[n:b].fill_(self.scratch_block * self.block_size)
        self.block_tables[:b].fill_(self.scratch_block)
        self.block_tables[:n, :w].copy_(meta.block_tables)
        self.seq_lens[:n].copy_(meta.seq_lens)
        self.seq_lens[n:b].fill_(1)
        self.graphs[b].replay()
        return self.model.gather_logits(self.logits[b][:n])
