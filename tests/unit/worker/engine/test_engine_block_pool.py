"""Block pool and KV-cache manager: allocation, reference counts, prefix hits, LRU eviction."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fms_worker.kv_cache import BlockPool, KVCacheManager


@dataclass
class Seq:
    seq_id: int
    token_ids: list[int]
    num_computed_tokens: int = 0
    extra: dict = field(default_factory=dict)


def test_allocate_and_free_return_blocks():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert pool.num_free == 1 and pool.num_used == 3 and pool.usage == 0.75
    pool.free(blocks)
    assert pool.num_free == 4
    with pytest.raises(RuntimeError, match="asked for 5"):
        pool.allocate(5)


def test_refcount_keeps_shared_block_until_last_free():
    pool = BlockPool(2)
    (b,) = pool.allocate(1)
    pool.touch([b])
    pool.free([b])
    assert pool.num_free == 1 and b.ref_cnt == 1
    pool.free([b])
    assert pool.num_free == 2
    with pytest.raises(RuntimeError, match="freed more often"):
        pool.free([b])


def test_prefix_hit_reuses_blocks_of_finished_sequence():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = Seq(0, list(range(10)))
    assert kv.allocate_slots(a, 10)
    a.num_computed_tokens = 10
    kv.cache_computed(a)
    a_blocks = kv.block_ids(0)
    kv.forget(a)
    assert kv.pool.num_free == 8

    b = Seq(1, list(range(9)) + [99, 98])  # shares the first two full blocks (8 tokens)
    hits, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 8 and [h.block_id for h in hits] == a_blocks[:2]
    assert kv.allocate_slots(b, len(b.token_ids) - num_hit, hits)
    assert kv.block_ids(1)[:2] == a_blocks[:2]
    assert kv.pool.num_used == 3


def test_hit_leaves_one_token_to_compute():
    kv = KVCacheManager(num_blocks=4, block_size=4)
    a = Seq(0, list(range(8)))
    kv.allocate_slots(a, 8)
    a.num_computed_tokens = 8
    kv.cache_computed(a)
    b = Seq(1, list(range(8)))
    _, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 4  # the last block is recomputed to get logits for its last token


def test_different_prefix_same_block_tokens_do_not_alias():
    kv = KVCacheManager(num_blocks=8, block_size=2)
    a = Seq(0, [1, 2, 3, 4, 5])
    kv.allocate_slots(a, 5)
    a.num_computed_tokens = 5
    kv.cache_computed(a)
    b = Seq(1, [9, 9, 3, 4, 5])
    _, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 0


def test_cached_free_blocks_are_evicted_lru():
    kv = KVCacheManager(num_blocks=4, block_size=2)
    a = Seq(0, [1, 2, 3, 4, 5])  # 2 full blocks cached + 1 partial
    kv.allocate_slots(a, 5)
    a.num_computed_tokens = 5
    kv.cache_computed(a)
    kv.forget(a)
    # A new sequence needing 3 blocks takes the never-used block, the uncached tail, then the
    # LRU cached one (blocks are freed tail first, so the prefix's first block survives longest).
    c = Seq(1, [7] * 5)
    assert kv.allocate_slots(c, 5)
    b = Seq(2, [1, 2, 3, 4, 6])
    hits, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 2 and len(hits) == 1


def test_allocation_failure_changes_nothing():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    a = Seq(0, list(range(12)))
    assert not kv.allocate_slots(a, 12)
    assert kv.pool.num_free == 2 and kv.block_ids(0) == []


def test_reclaiming_cached_blocks_counts_against_free():
    kv = KVCacheManager(num_blocks=3, block_size=2)
    a = Seq(0, [1, 2, 3, 4, 5])
    kv.allocate_slots(a, 5)
    a.num_computed_tokens = 5
    kv.cache_computed(a)
    kv.forget(a)
    b = Seq(1, [1, 2, 3, 4, 5, 6, 7, 8, 9])  # 2 hit blocks + needs 3 new: 5 > 3
    hits, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 4
    assert not kv.allocate_slots(b, 5, hits)
    assert kv.pool.num_free == 3


def test_fork_shares_blocks_by_refcount():
    kv = KVCacheManager(num_blocks=8, block_size=4, enable_caching=False)
    a = Seq(0, list(range(10)))
    kv.allocate_slots(a, 10)
    b = Seq(1, list(range(10)), num_computed_tokens=8)
    kv.fork(a, b, 2)
    assert kv.block_ids(1) == kv.block_ids(0)[:2]
    assert kv.allocate_slots(b, 3)  # recompute the tail + one decode slot
    assert kv.pool.num_used == 4
    kv.forget(a)
    assert kv.pool.num_used == 3  # the shared blocks live on in b
    kv.forget(b)
    assert kv.pool.num_free == 8
