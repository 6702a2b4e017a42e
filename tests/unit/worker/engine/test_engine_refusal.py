"""A request the scheduler refuses leaves no trace in the engine (regression: the engine loop used to spin)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, smollm2_dir):
    import random_model

    model = random_model.write("llama-tiny", tmp_path_factory.mktemp("tiny"), smollm2_dir)
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(model), "max_model_len": 256},
        "precision": {"dtype": "float32"},
        "batching": {"max_num_seqs": 2, "max_num_batched_tokens": 64},
        "caching": {"num_kv_blocks": 32},
        "runtime": {"device": "cpu"},
    })
    return LLMEngine(cfg)


def test_refused_request_is_not_registered(engine):
    with pytest.raises(ValueError):
        engine.add_request("too-many", [1, 2, 3], SamplingParams(n=4, max_tokens=2))
    assert not engine.has_unfinished()
    engine.add_request("ok", [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True))
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert outs[-1].finished and len(outs[-1].outputs[0].token_ids) == 2
