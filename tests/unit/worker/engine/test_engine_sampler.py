"""Sampler: each option on hand-made logits, and seeded reproducibility."""

from __future__ import annotations

import torch

from fms_worker.engine.types import SamplingParams
from fms_worker.sampling import Sampler, SamplingBatch
from fms_worker.sampling.sampler import _chunks, argmax_rows

V = 8


def run(logits, params, histories=None, seeds=None, generators=None):
    logits = torch.tensor(logits, dtype=torch.float32)
    rows = logits.shape[0]
    params = params if isinstance(params, list) else [params] * rows
    histories = histories or [([], 0)] * rows
    gens = generators or [None if s is None else torch.Generator().manual_seed(s) for s in (seeds or [None] * rows)]
    batch = SamplingBatch.build(params, histories, gens, V, torch.device("cpu"))
    return Sampler()(logits, batch)


def draws(logits, params, n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {run([logits], params, generators=[gen]).token_ids.item() for _ in range(n)}


LOGITS = [0.0, 1.0, 4.0, 3.9, 0.5, -1.0, 2.0, 3.0]


def test_greedy_picks_argmax():
    out = run([LOGITS, LOGITS[::-1]], SamplingParams(temperature=0.0))
    assert out.token_ids.tolist() == [2, 5]


def test_temperature_sampling_reaches_several_tokens():
    assert len(draws(LOGITS, SamplingParams(temperature=1.0))) >= 4


def test_top_k_limits_candidates():
    assert draws(LOGITS, SamplingParams(temperature=2.0, top_k=2)) == {2, 3}


def test_top_p_keeps_smallest_nucleus():
    probs = torch.softmax(torch.tensor(LOGITS), 0)
    assert probs[2] < 0.5 < probs[2] + probs[3]
    assert draws(LOGITS, SamplingParams(temperature=1.0, top_p=0.5)) == {2, 3}


def test_min_p_drops_unlikely_tokens():
    # p(token)/p(max) >= 0.3 holds for tokens 2, 3 (3.9) and 7 (e^-1 = 0.37) only.
    assert draws(LOGITS, SamplingParams(temperature=1.0, min_p=0.3)) == {2, 3, 7}


def test_repetition_penalty_applies_to_prompt_and_output():
    out = run([LOGITS], SamplingParams(temperature=0.0, repetition_penalty=2.0), histories=[([2], 1)])
    assert out.token_ids.tolist() == [3]


def test_presence_and_frequency_penalties_count_output_only():
    p = SamplingParams(temperature=0.0, presence_penalty=0.2)
    assert run([LOGITS], p, histories=[([2], 1)]).token_ids.tolist() == [2]  # in the prompt: not penalized
    assert run([LOGITS], p, histories=[([0, 2], 1)]).token_ids.tolist() == [3]
    f = SamplingParams(temperature=0.0, frequency_penalty=0.05)
    assert run([LOGITS], f, histories=[([0, 2], 1)]).token_ids.tolist() == [2]  # 4.0 - 0.05 > 3.9
    assert run([LOGITS], f, histories=[([0, 2, 2, 2], 1)]).token_ids.tolist() == [3]


def test_seeded_rows_are_reproducible_and_independent_of_batch():
    p = SamplingParams(temperature=1.0)
    row = [1.0] * V
    a = [run([row], p, seeds=[42]).token_ids.item() for _ in range(1)]
    gen_a, gen_b = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
    seq_a = [run([row], p, generators=[gen_a]).token_ids.item() for _ in range(20)]
    seq_b = [run([row, row], [SamplingParams(temperature=1.0)] * 2, generators=[None, gen_b]).token_ids[1].item()
             for _ in range(20)]
    assert seq_a == seq_b and a[0] == seq_a[0]
    assert len(set(seq_a)) > 1


def test_logprobs_top_n_and_chosen():
    out = run([LOGITS], SamplingParams(temperature=0.0, logprobs=2))
    ref = torch.log_softmax(torch.tensor(LOGITS), 0)
    assert out.top_ids.tolist() == [[2, 3]]
    assert torch.allclose(out.top_logprobs[0], ref[[2, 3]])
    assert torch.allclose(out.chosen_logprobs, ref[[2]])


def test_no_logprobs_requested_returns_none():
    out = run([LOGITS], SamplingParams(temperature=0.0))
    assert out.chosen_logprobs is None and out.top_ids is None


def test_two_pass_argmax_picks_the_same_first_maximum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 128256, generator=g)
    x[1, 1000] = x[1, 90000] = 50.0  # a tie across chunks: the first one wins, as argmax's
    x[2, 7] = x[2, 9] = 60.0  # a tie inside one chunk
    x[3, -1] = 70.0  # the very last column
    x[4] = 0.0  # all equal: index 0
    for chunks in (_chunks(128256), 3, 16):
        assert torch.equal(argmax_rows(x, chunks), x.argmax(dim=-1)), chunks
    assert argmax_rows(x, _chunks(128256)).tolist()[1:] == [1000, 7, 128255, 0]
    assert _chunks(128256) == 501 and _chunks(97) == 1  # too short to split: one pass
