"""Step inputs for the GPU path: block tables instead of per-token slot lists.

Host work is O(new tokens + batch x blocks) per step, done with numpy, and
the tensors move to the GPU in one non-blocking copy each from pinned memory.
"""

from __future__ import annotations

import numpy as np
import torch

from fms_worker.kernels.paged_attention import num_splits_for
from fms_worker.layers.attention_triton import PagedAttentionMetadata
from fms_worker.model_runner.inputs import StepInputs, known_ids
from fms_worker.scheduler.output import ScheduledSeq


def _to(device: torch.device, a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t


def build_paged_inputs(seqs: list[ScheduledSeq], block_size: int, device: torch.device, scratch_block: int,
                       num_kv_heads: int) -> StepInputs:
    num_new = np.fromiter((s.num_new for s in seqs), dtype=np.int64, count=len(seqs))
    starts = np.fromiter((s.start for s in seqs), dtype=np.int64, count=len(seqs))
    query_start = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(num_new, out=query_start[1:])
    total = int(query_start[-1])
    width = max(len(s.block_ids) for s in seqs)
    table = np.full((len(seqs), width), scratch_block, dtype=np.int32)
    ids = np.empty(total, dtype=np.int64)
    inflight = []
    for i, s in enumerate(seqs):
        table[i, : len(s.block_ids)] = s.block_ids
        ids[query_start[i] : query_start[i + 1]] = known_ids(s)
        if s.inflight_input:
            inflight.append((int(query_start[i + 1]) - 1, s.seq_id))
    # Positions and slots of the new tokens: row i's tokens sit at start_i .. start_i + num_new_i - 1.
    row = np.repeat(np.arange(len(seqs)), num_new)
    positions = np.arange(total, dtype=np.int64) - np.repeat(query_start[:-1].astype(np.int64) - starts, num_new)
    slots = table[row, positions // block_size].astype(np.int64) * block_size + positions % block_size
    seq_lens = (starts + num_new).astype(np.int32)
    sampling = [s for s in seqs if s.sample]
    logits_rows = np.array([query_start[i + 1] - 1 for i, s in enumerate(seqs) if s.sample], dtype=np.int64)
    max_q = int(num_new.max())
    meta = PagedAttentionMetadata(
        slot_mapping=_to(device, slots),
        block_tables=_to(device, table),
        seq_lens=_to(device, seq_lens),
        query_start=_to(device, query_start),
        max_q_len=max_q,
        num_splits=num_splits_for(len(seqs), num_kv_heads, int(seq_lens.max())) if max_q == 1 else 1,
        block_size=block_size,
    )
    return StepInputs(
        input_ids=_to(device, ids),
        positions=_to(device, positions),
        meta=meta,
        logits_rows=_to(device, logits_rows),
        sampling_seqs=sampling,
        inflight_rows=inflight,
    )
