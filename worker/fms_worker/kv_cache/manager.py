"""Block tables per sequence on top of the block pool.

The scheduler asks three questions here: which leading blocks of a new
sequence are already cached, can this sequence get slots for N more tokens,
and which blocks does it hold. It never sees a tensor; the model runner turns
block ids into slot indices.
"""

from __future__ import annotations

from typing import Protocol

from fms_worker.kv_cache.block_pool import BlockPool, KVBlock
from fms_worker.kv_cache.prefix import full_block_hashes


class SequenceLike(Protocol):
    seq_id: int
    token_ids: list[int]
    num_computed_tokens: int


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True):
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, enable_caching)
        self.enable_caching = enable_caching
        self._tables: dict[int, list[KVBlock]] = {}
        self._hashes: dict[int, list[int]] = {}  # hashes of each sequence's full blocks, kept across preemption
        self.prefix_queries = 0  # tokens looked up
        self.prefix_hits = 0  # tokens found

    def block_ids(self, seq_id: int) -> list[int]:
        return [b.block_id for b in self._tables.get(seq_id, ())]

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_blocks(self, seq: SequenceLike) -> tuple[list[KVBlock], int]:
        """Longest chain of cached blocks that prefixes the sequence, and how many tokens it covers.

        At least one token is left to compute: the step needs the last position's logits.
        """
        if not self.enable_caching:
            return [], 0
        hashes = self._block_hashes(seq)
        max_blocks = (len(seq.token_ids) - 1) // self.block_size
        hits: list[KVBlock] = []
        for h in hashes[:max_blocks]:
            block = self.pool.lookup(h)
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def record_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        """Count a prefix lookup once the sequence is admitted (a failed admission retries the lookup)."""
        if self.enable_caching:
            self.prefix_queries += num_tokens
            self.prefix_hits += num_hit_tokens

    def allocate_slots(self, seq: SequenceLike, num_new_tokens: int, computed: list[KVBlock] | None = None) -> bool:
        """Make room for `num_new_tokens` past the computed ones; False (and no change) if the pool is short."""
        computed = computed or []
        table = self._tables.setdefault(seq.seq_id, [])
        num_tokens = seq.num_computed_tokens + len(computed) * self.block_size + num_new_tokens
        num_new_blocks = self.blocks_needed(num_tokens) - len(table) - len(computed)
        # Cached blocks sitting in the free queue stop being free once taken.
        reclaimed = sum(1 for b in computed if b.ref_cnt == 0)
        if num_new_blocks > self.pool.num_free - reclaimed:
            if not table:
                del self._tables[seq.seq_id]
            return False
        self.pool.touch(computed)
        table.extend(computed)
        if num_new_blocks > 0:
            table.extend(self.pool.allocate(num_new_blocks))
        return True

    def cache_computed(self, seq: SequenceLike) -> None:
        """Index the sequence's full, computed blocks so later requests can reuse them."""
        if not self.enable_caching:
            return
        table = self._tables.get(seq.seq_id, [])
        hashes = self._block_hashes(seq)
        num_full = min(seq.num_computed_tokens // self.block_size, len(table), len(hashes))
        for block, h in zip(table[:num_full], hashes[:num_full]):
            self.pool.cache(block, h)

    def fork(self, parent: SequenceLike, child: SequenceLike, num_blocks: int) -> None:
        """Share the parent's first `num_blocks` blocks with the child (reference counts, no copy)."""
        shared = self._tables[parent.seq_id][:num_blocks]
        self.pool.touch(shared)
        self._tables[child.seq_id] = list(shared)
        self._hashes[child.seq_id] = self._hashes.get(parent.seq_id, [])[:num_blocks]

    def free(self, seq: SequenceLike) -> None:
        table = self._tables.pop(seq.seq_id, [])
        self.pool.free(list(reversed(table)))

    def forget(self, seq: SequenceLike) -> None:
        """Free the blocks and drop the hashes of a finished sequence."""
        self.free(seq)
        self._hashes.pop(seq.seq_id, None)

    def _block_hashes(self, seq: SequenceLike) -> list[int]:
        known = self._hashes.get(seq.seq_id, [])
        if len(known) < len(seq.token_ids) // self.block_size:
            known = full_block_hashes(seq.token_ids, self.block_size, known)
            self._hashes[seq.seq_id] = known
        return known
