"""The engine on a GPU: CUDA-graph path vs eager path vs the CPU engine vs transformers, same random weights.

Float32 throughout (TF32 off), so the paths differ only by rounding; the tiny model's scaled lm_head
makes greedy choices clear-cut enough for token-for-token equality.
"""

from __future__ import annotations


import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    # inductor itself trips this deprecation inside torch 2.11; not ours to fix
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]
FP32 = {"dtype": "float32"}  # TF32 is switched off below, so the paths differ only by rounding




@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def test_graph_path_matches_eager_and_cpu(tiny_dir, make_prompts, run_greedy):
    prompts = make_prompts()
    graph, used = run_greedy(tiny_dir, prompts, eager=False, precision=FP32)
    assert used, "the CUDA-graph path was not taken"
    eager, _ = run_greedy(tiny_dir, prompts, eager=True, precision=FP32)
    cpu, _ = run_greedy(tiny_dir, prompts, eager=True, precision=FP32, device="cpu")
    assert graph == eager
    assert graph == cpu


def test_async_scheduling_matches_step_by_step(tiny_dir, make_prompts, run_greedy):
    from fms_worker.engine.types import SamplingParams

    prompts = make_prompts(12, seed=2)
    assert (run_greedy(tiny_dir, prompts, eager=False, precision=FP32, async_scheduling="on")
            == run_greedy(tiny_dir, prompts, eager=False, precision=FP32, async_scheduling="off"))
    seeded = [SamplingParams(temperature=0.8, top_k=50, seed=i, max_tokens=5 + 3 * i, ignore_eos=True)
              for i in range(len(prompts))]
    on, _ = run_greedy(tiny_dir, prompts, eager=False, precision=FP32, async_scheduling="on", params=seeded)
    off, _ = run_greedy(tiny_dir, prompts, eager=False, precision=FP32, async_scheduling="off", params=seeded)
    assert on == off
    assert [len(t) for t in on] == [5 + 3 * i for i in range(len(prompts))]


def test_matches_transformers(tiny_dir, make_prompts, run_greedy):
    from transformers import AutoModelForCausalLM

    prompts = make_prompts(4, seed=1)
    ours, _ = run_greedy(tiny_dir, prompts, eager=False, precision=FP32, max_tokens=16)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).cuda()
    for p, o in zip(prompts, ours):
        ids = torch.tensor([p], device="cuda")
        ref = hf.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
        assert ref[0, len(p):].tolist() == o
