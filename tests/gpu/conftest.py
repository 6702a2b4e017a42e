"""The GPU tests' shared model: the tiny random Llama of bench/random_model.py with a real tokenizer."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def _tokenizer_dir() -> Path:
    # On the GPU machine the SmolLM2 tokenizer files travel in .device/tokenizer (the weights stay here).
    for d in (REPO / ".device" / "tokenizer", REPO / ".cache" / "models" / "smollm2-135m"):
        if (d / "tokenizer.json").exists():
            return d
    pytest.skip("no tokenizer files (.device/tokenizer or .cache/models/smollm2-135m)")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    import random_model

    return random_model.write("llama-tiny", tmp_path_factory.mktemp("tiny"), _tokenizer_dir())


@pytest.fixture(scope="session")
def make_prompts():
    def prompts(n: int = 8, seed: int = 0) -> list[list[int]]:
        rng = random.Random(seed)
        return [[rng.randrange(49152) for _ in range(rng.randint(3, 70))] for _ in range(n)]

    return prompts
