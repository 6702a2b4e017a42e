from types import SimpleNamespace

import pytest

from fms_worker.engine.context import context_limit


@pytest.mark.parametrize("cfg,requested,expected", [
    (dict(max_position_embeddings=8192), None, 8192),
    (dict(max_position_embeddings=8192), 2048, 2048),
    (dict(max_position_embeddings=8192), 100000, 8192),
    # Mistral 7B v0.1: a 4096-token window inside 32k positions
    (dict(max_position_embeddings=32768, sliding_window=4096), None, 4096),
    (dict(max_position_embeddings=32768, sliding_window=4096), 1024, 1024),
    # Qwen2 ships a window but switches it off
    (dict(max_position_embeddings=32768, sliding_window=32768, use_sliding_window=False), None, 32768),
    (dict(max_position_embeddings=32768, sliding_window=None), None, 32768),
])
def test_context_limit(cfg, requested, expected):
    assert context_limit(SimpleNamespace(**cfg), requested) == expected
