"""Paged KV-cache bookkeeping: fixed-size blocks, reference counts, prefix caching. Pure Python."""

from fms_worker.kv_cache.block_pool import BlockPool, KVBlock
from fms_worker.kv_cache.manager import KVCacheManager
from fms_worker.kv_cache.prefix import hash_block_tokens

__all__ = ["BlockPool", "KVBlock", "KVCacheManager", "hash_block_tokens"]
