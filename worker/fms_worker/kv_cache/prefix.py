"""Prefix hashes: a full block is named by its tokens chained with its prefix's hash.

Chaining makes a block's hash depend on everything before it, so two blocks
with equal tokens but different prefixes never alias.
"""

from __future__ import annotations

from collections.abc import Sequence

NO_PARENT = 0


def hash_block_tokens(parent_hash: int, tokens: Sequence[int]) -> int:
    return hash((parent_hash, tuple(tokens)))


def full_block_hashes(token_ids: Sequence[int], block_size: int, known: list[int]) -> list[int]:
    """Extend `known` (hashes of the leading full blocks) to cover every full block of `token_ids`."""
    hashes = list(known)
    parent = hashes[-1] if hashes else NO_PARENT
    for start in range(len(hashes) * block_size, len(token_ids) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes
