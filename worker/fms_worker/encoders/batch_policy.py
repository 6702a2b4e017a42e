"""When to close a batch and which waiting items go in it: pure, no asyncio, no torch.

Triton-style dynamic batching. A batch closes as soon as `max_batch_size`
compatible items wait, or when the oldest item has waited `max_queue_delay`;
then it takes the largest preferred size that is available (so pre-built
shapes get hit), or everything compatible when no preferred size fits.

Padding-aware bucketing: the oldest item anchors the batch and fixes its
length bucket; only items of that bucket or shorter ones may join, same-bucket
items first. Longer items never join a shorter batch (they would raise the
padded length of every row); they anchor a batch of their own in turn, so no
item starves.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...] = ()
    length_buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS

    def __post_init__(self):
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(f"batching.preferred_batch_sizes {bad} fall outside 1..max_batch_size "
                             f"({self.max_batch_size}); drop them or raise max_batch_size")


@dataclass(frozen=True)
class Waiting:
    """What the policy sees of one waiting item: its token length (0 for fixed-size inputs) and arrival time."""

    length: int
    enqueued_at: float


@dataclass(frozen=True)
class BatchPlan:
    take: tuple[int, ...] = ()   # indices into the waiting list, ascending
    wait_s: float | None = None  # nothing to take: wake up after this long (None: only on new arrivals)


def length_bucket(length: int, buckets: Sequence[int]) -> int:
    i = bisect.bisect_left(buckets, length)
    return buckets[i] if i < len(buckets) else length


def plan_batch(waiting: Sequence[Waiting], now: float, policy: BatchPolicy) -> BatchPlan:
    if not waiting:
        return BatchPlan()
    anchor = length_bucket(waiting[0].length, policy.length_buckets)
    bucket = [length_bucket(w.length, policy.length_buckets) for w in waiting]
    # Same bucket as the anchor first (arrival order), then shorter buckets, longest first.
    eligible = sorted((i for i, b in enumerate(bucket) if b <= anchor), key=lambda i: (-bucket[i], i))
    if len(eligible) >= policy.max_batch_size:
        return BatchPlan(take=tuple(sorted(eligible[: policy.max_batch_size])))
    waited = now - waiting[0].enqueued_at
    if waited < policy.max_queue_delay_s:
        return BatchPlan(wait_s=policy.max_queue_delay_s - waited)
    fitting = [b for b in policy.preferred_batch_sizes if b <= len(eligible)]
    n = max(fitting) if fitting else len(eligible)
    return BatchPlan(take=tuple(sorted(eligible[:n])))
