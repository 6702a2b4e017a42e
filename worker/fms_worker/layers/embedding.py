"""Vocabulary-parallel embedding and LM head: rank r holds a contiguous slice of the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.parallel import get_parallel_state, tp_all_gather, tp_all_reduce


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, params_dtype: torch.dtype = torch.float32):
        super().__init__()
        state = get_parallel_state()
        self.tp_size = state.tp_size
        self.vocab_size = vocab_size
        self.shard = -(-vocab_size // state.tp_size)  # last rank may hold padding rows
        self.start = state.tp_rank * self.shard
        self.weight = nn.Parameter(torch.zeros(self.shard, dim, dtype=params_dtype), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        rows = loaded[self.start : self.start + self.shard]
        param.data[: rows.shape[0]].copy_(rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.shard)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return tp_all_reduce(out.masked_fill(outside.unsqueeze(-1), 0))


class ParallelLMHead(VocabParallelEmbedding):
    def __init__(self, vocab_size: int, dim: int, params_dtype: torch.dtype = torch.float32,
                 tied_to: VocabParallelEmbedding | None = None):
        super().__init__(vocab_size, dim, params_dtype)
        if tied_to is not None:
            self.weight = tied_to.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = tp_all_gather(F.linear(hidden, self.weight))  # [N, V(+padding)]
        return logits[..., : self.vocab_size]
