"""The benchmark workloads, defined once so every engine sees the same requests."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    max_tokens: int


def offline_set(num: int = 256, lo: int = 100, hi: int = 1024, vocab: int = 10000, seed: int = 0) -> list[Request]:
    """nano-vllm's benchmark shape: input and output lengths uniform in [lo, hi], seed 0, EOS ignored."""
    rng = random.Random(seed)
    out = []
    for _ in range(num):
        n_in, n_out = rng.randint(lo, hi), rng.randint(lo, hi)
        out.append(Request([rng.randint(0, vocab - 1) for _ in range(n_in)], n_out))
    return out


def latency_request(prompt_len: int = 128, max_tokens: int = 256, vocab: int = 10000, seed: int = 0) -> Request:
    rng = random.Random(seed)
    return Request([rng.randint(0, vocab - 1) for _ in range(prompt_len)], max_tokens)
