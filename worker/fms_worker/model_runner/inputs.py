"""The step's flattened model inputs and attention metadata, built from block tables on the host."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fms_worker.layers.attention import AttentionMetadata, PrefillSpan
from fms_worker.scheduler.output import ScheduledSeq


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMetadata
    logits_rows: torch.Tensor  # [S] last row of each sequence that samples
    sampling_seqs: list[ScheduledSeq]
    # (row of input_ids, seq_id): inputs still on the GPU, sampled by the previous step; 0 until filled in
    inflight_rows: list[tuple[int, int]] = field(default_factory=list)


def known_ids(item: ScheduledSeq) -> list[int]:
    """The step's input ids known on the host; an in-flight last token reads as 0 (the runner fills it in)."""
    ids = item.input_ids
    return ids + [0] if item.inflight_input else ids


def _slots(block_ids: list[int], block_size: int, start: int, end: int) -> list[int]:
    return [block_ids[p // block_size] * block_size + p % block_size for p in range(start, end)]


def build_inputs(seqs: list[ScheduledSeq], block_size: int, device: torch.device) -> StepInputs:
    ids, positions, slot_mapping, logits_rows, sampling = [], [], [], [], []
    prefills: list[PrefillSpan] = []
    decode_rows, decode_slots, inflight = [], [], []
    for item in seqs:
        row, end = len(ids), item.start + item.num_new
        ids.extend(known_ids(item))
        if item.inflight_input:
            inflight.append((row + item.num_new - 1, item.seq_id))
        positions.extend(range(item.start, end))
        slot_mapping.extend(_slots(item.block_ids, block_size, item.start, end))
        if item.num_new == 1:
            decode_rows.append(row)
            decode_slots.append(_slots(item.block_ids, block_size, 0, end))
        elif item.start == 0:
            prefills.append(PrefillSpan(row, row + item.num_new, None, None))
        else:
            ctx = torch.tensor(_slots(item.block_ids, block_size, 0, end), device=device)
            # query i sits at position start + i and sees keys 0..start+i
            mask = torch.arange(end, device=device)[None, :] <= torch.arange(item.start, end, device=device)[:, None]
            prefills.append(PrefillSpan(row, row + item.num_new, ctx, mask))
        if item.sample:
            logits_rows.append(row + item.num_new - 1)
            sampling.append(item)

    meta = AttentionMetadata(slot_mapping=torch.tensor(slot_mapping, dtype=torch.long, device=device), prefills=prefills)
    if decode_rows:
        width = max(len(s) for s in decode_slots)
        meta.decode_rows = torch.tensor(decode_rows, dtype=torch.long, device=device)
        meta.decode_slots = torch.tensor([s + [0] * (width - len(s)) for s in decode_slots], dtype=torch.long, device=device)
        lengths = torch.tensor([len(s) for s in decode_slots], device=device)
        meta.decode_mask = (torch.arange(width, device=device)[None, :] < lengths[:, None])[:, None, None, :]
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        meta=meta,
        logits_rows=torch.tensor(logits_rows, dtype=torch.long, device=device),
        sampling_seqs=sampling,
        inflight_rows=inflight,
    )
