"""Bounded LRU cache of encoder results keyed by a hash of the model input."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def input_key(kind: str, token_ids: list[int]) -> bytes:
    return hashlib.blake2b(kind.encode() + np.asarray(token_ids, dtype=np.int64).tobytes(), digest_size=16).digest()


class ResultCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[bytes, object] = OrderedDict()
        self.queries = 0
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, key: bytes):
        self.queries += 1
        value = self._items.get(key)
        if value is not None:
            self.hits += 1
            self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
