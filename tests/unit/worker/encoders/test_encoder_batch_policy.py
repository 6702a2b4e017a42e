"""Table tests of the pure batch-forming policy."""

from __future__ import annotations

import pytest

from fms_worker.encoders.batch_policy import BatchPlan, BatchPolicy, Waiting, length_bucket, plan_batch

P = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.010, length_buckets=(16, 32, 64))


def w(*lengths, t0=0.0):
    return [Waiting(n, t0 + i * 0.001) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("waiting, now, policy, expected", [
    ([], 1.0, P, BatchPlan()),
    # Not full, delay not expired: wait for the rest of the oldest item's delay.
    (w(5, 6), 0.004, P, BatchPlan(wait_s=pytest.approx(0.006))),
    # Full: dispatch at once, oldest four.
    (w(5, 6, 7, 8, 9), 0.0, P, BatchPlan(take=(0, 1, 2, 3))),
    # Delay expired: take what is there.
    (w(5, 6), 0.010, P, BatchPlan(take=(0, 1))),
    # Longer bucket never joins a shorter anchor; it waits its turn.
    (w(5, 40, 6), 0.020, P, BatchPlan(take=(0, 2))),
    # A long anchor takes its own bucket first, then shorter items.
    (w(40, 5, 50, 6, 7), 0.020, P, BatchPlan(take=(0, 1, 2, 3))),
    # Full count of compatible items only counts those that fit.
    (w(5, 40, 41, 42, 6), 0.0, P, BatchPlan(wait_s=pytest.approx(0.010))),
    # Preferred sizes: after the delay round down to the largest preferred size available.
    (w(1, 1, 1), 0.5, BatchPolicy(4, 0.01, (2,), (16,)), BatchPlan(take=(0, 1))),
    (w(1), 0.5, BatchPolicy(4, 0.01, (2,), (16,)), BatchPlan(take=(0,))),
    # Zero delay: dispatch immediately whatever waits.
    (w(3, 4), 0.0, BatchPolicy(8, 0.0), BatchPlan(take=(0, 1))),
])
def test_plan_batch(waiting, now, policy, expected):
    assert plan_batch(waiting, now, policy) == expected


def test_length_bucket_beyond_last_is_own_length():
    assert [length_bucket(n, (16, 32)) for n in (1, 16, 17, 33)] == [16, 16, 32, 33]


def test_preferred_size_out_of_range_is_refused_with_fix():
    with pytest.raises(ValueError, match="raise max_batch_size"):
        BatchPolicy(max_batch_size=8, max_queue_delay_s=0.0, preferred_batch_sizes=(16,))
