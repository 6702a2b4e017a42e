"""Vocabulary-parallel embedding and LM head: rank r holds a contiguous slice of the vocabulary."""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.kernels.int8_matmul import gemv16, gemv16_supported
from fms_worker.layers.quant_method import GEMV16
from fms_worker.parallel import get_parallel_state, tp_all_gather, tp_all_reduce

log = logging.getLogger(__name__)


@functools.cache
def _mm_float32_out(device: torch.device) -> bool:
    """Whether this CUDA build's matmul writes float32 from bf16 inputs (torch.mm's out_dtype)."""
    try:
        torch.mm(torch.ones(2, 2, dtype=torch.bfloat16, device=device),
                 torch.ones(2, 2, dtype=torch.bfloat16, device=device), out_dtype=torch.float32)
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        log.warning("LM head logits are rounded to the model dtype: torch.mm has no float32 output here (%s)", exc)
        return False
    return True


class _VocabSlice(nn.Module):
    """This rank's rows [start, start + shard) of a [vocab, dim] matrix, and the loader that fills them."""

    def __init__(self, vocab_size: int):
        super().__init__()
        state = get_parallel_state()
        self.tp_size, self.vocab_size = state.tp_size, vocab_size
        self.shard = -(-vocab_size // state.tp_size)  # last rank may hold padding rows
        self.start = state.tp_rank * self.shard

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        rows = loaded[self.start : self.start + self.shard]
        param.data[: rows.shape[0]].copy_(rows)
        param.data[rows.shape[0]:].zero_()  # padding rows: their outputs are cut off, but keep them finite


class VocabParallelEmbedding(_VocabSlice):
    def __init__(self, vocab_size: int, dim: int, params_dtype: torch.dtype = torch.float32):
        super().__init__(vocab_size)
        self.weight = nn.Parameter(torch.zeros(self.shard, dim, dtype=params_dtype), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.shard)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return tp_all_reduce(out.masked_fill(outside.unsqueeze(-1), 0))


class ParallelLMHead(_VocabSlice):
    """Logits for this rank's vocabulary slice, gathered across ranks.

    Tied to the embedding, it shares that weight. Untied, it may hold a weight-only quantized copy
    (`quant_method`, see LinearMethod.for_lm_head): at batch 1 an 8B model's head is 1 GB of the
    16 GB read per token, and it would stay bf16 while the layers shrink.

    Logits come out in float32, not rounded to the model dtype: bf16 logits near 20 lie on a grid of
    0.125, so close candidates become exact ties that greedy decoding breaks by token id, and any
    change of summation order (batch size, tensor parallelism) then flips the choice. The matmul
    accumulates in float32 anyway; only its last rounding is skipped.
    """

    float32_out = True  # its quant method runs (and so warms up) with float32 output: `apply_float32`

    def __init__(self, vocab_size: int, dim: int, params_dtype: torch.dtype = torch.float32,
                 tied_to: VocabParallelEmbedding | None = None, quant_method=None):
        super().__init__(vocab_size)
        # A tied head shares the embedding's plain weight: only a method working on that (tree mode) applies.
        dense = getattr(quant_method, "dense_weight", False)
        self.quant_method = quant_method if tied_to is None or dense else None
        if tied_to is not None:
            self.weight = tied_to.weight
        elif self.quant_method is not None:
            # Quantized kernels want the row count a multiple of 16 (tinygemm: 8 on CUDA, 16 on CPU, else a
            # per-call dequantization); the extra rows are zero and their logits are cut before the gather.
            rows = -(-self.shard // 16) * 16
            self.quant_method.create_weights(self, dim, [rows], params_dtype, self.weight_loader)
        else:
            self.weight = nn.Parameter(torch.zeros(self.shard, dim, dtype=params_dtype), requires_grad=False)
            self.weight.weight_loader = self.weight_loader

    def local_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """This rank's vocabulary slice of the logits in float32, [N, V / tp] (no communication)."""
        if self.quant_method is not None:
            return self.quant_method.apply_float32(self, hidden)[..., : self.shard]
        if hidden.dtype == torch.float32:
            return F.linear(hidden, self.weight)
        if GEMV16 and gemv16_supported(hidden, self.weight):  # one row (decode at batch 1): our GEMV
            return gemv16(hidden.reshape(1, -1), self.weight, out_dtype=torch.float32).reshape(*hidden.shape[:-1], -1)
        if hidden.is_cuda and _mm_float32_out(hidden.device):
            flat = hidden.reshape(-1, hidden.shape[-1])
            return torch.mm(flat, self.weight.t(), out_dtype=torch.float32).reshape(*hidden.shape[:-1], -1)
        if hidden.is_cuda:
            return F.linear(hidden, self.weight).float()
        # CPU matmuls have no float32 output for bf16 inputs; converting the head every step would
        # cost more than the step, so a float32 copy is kept (made on first use, after loading).
        if getattr(self, "_weight_f32", None) is None:
            self._weight_f32 = self.weight.float()
        return F.linear(hidden.float(), self._weight_f32)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's slices side by side, padding cut: [N, V]."""
        return tp_all_gather(local)[..., : self.vocab_size]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.gather(self.local_logits(hidden))
