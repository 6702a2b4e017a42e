"""How long a sequence may get: the smallest of what the user asked, the model's positions and its attention window."""

from __future__ import annotations


def context_limit(hf_config, requested: int | None) -> int:
    """Sliding-window attention (Mistral v0.1, some Qwen2 configs) is not implemented: within its window full
    attention computes the same function, so the context is capped there rather than answering differently."""
    limit = hf_config.max_position_embeddings
    if requested is not None:
        limit = min(limit, requested)
    window = getattr(hf_config, "sliding_window", None)
    if window and getattr(hf_config, "use_sliding_window", True):
        limit = min(limit, window)
    return limit
