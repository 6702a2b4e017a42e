"""The LM head's logits are float32, not rounded to the model dtype (ties in bf16 flip greedy choices)."""

from __future__ import annotations

import torch

from fms_worker.layers.embedding import ParallelLMHead, VocabParallelEmbedding


def _head(vocab: int, dim: int, dtype: torch.dtype, tied: bool) -> ParallelLMHead:
    torch.manual_seed(0)
    weight = torch.randn(vocab, dim).to(dtype)
    if tied:
        emb = VocabParallelEmbedding(vocab, dim, params_dtype=dtype)
        emb.weight_loader(emb.weight, weight)
        return ParallelLMHead(vocab, dim, params_dtype=dtype, tied_to=emb)
    head = ParallelLMHead(vocab, dim, params_dtype=dtype)
    head.weight_loader(head.weight, weight)
    return head


def test_bf16_logits_are_float32_and_unrounded():
    for tied in (False, True):
        head = _head(vocab=1000, dim=256, dtype=torch.bfloat16, tied=tied)
        hidden = torch.randn(4, 256).to(torch.bfloat16)
        logits = head.compute_logits(hidden)
        exact = hidden.double() @ head.weight.double().t()
        assert logits.dtype == torch.float32 and logits.shape == (4, 1000)
        rounded_error = (exact.to(torch.bfloat16).double() - exact).abs().max()
        assert rounded_error > 0.01  # what bf16 logits of this size lose (|logit| ~ 16: steps of 0.0625)
        assert (logits.double() - exact).abs().max() < 1e-3


def test_ties_that_bf16_rounding_makes_stay_apart():
    head = _head(vocab=2, dim=2, dtype=torch.bfloat16, tied=False)
    head.weight.data.copy_(torch.tensor([[16.0, 0.0], [16.0, 2 ** -5]]))  # logits 16 and 16.03125
    hidden = torch.ones(1, 2, dtype=torch.bfloat16)
    assert torch.nn.functional.linear(hidden, head.weight)[0].unique().numel() == 1  # a tie in bf16 (steps of 0.125)
    logits = head.compute_logits(hidden)[0]
    assert logits.tolist() == [16.0, 16.03125] and logits.argmax().item() == 1


def test_float32_models_are_unchanged():
    head = _head(vocab=300, dim=64, dtype=torch.float32, tied=False)
    hidden = torch.randn(3, 64)
    assert torch.equal(head.compute_logits(hidden), torch.nn.functional.linear(hidden, head.weight))
