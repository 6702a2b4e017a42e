"""A pipeline stage: a slice of the decoder layers, fed by the previous stage over torch.distributed.

The stage wraps an unchanged model class built with only its layers. Stage 0
embeds the tokens; every other stage receives (hidden, residual) from the
same tensor-parallel rank of the stage before; the last stage applies the
final norm and the LM head. Stages run one after another within a step (no
micro-batching yet), so the result equals the unsplit model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from fms_worker.layers.attention import AttentionMetadata
from fms_worker.loader.weights import load_weights, tensor_names
from fms_worker.models.registry import resolve_model_class
from fms_worker.parallel.stages import stage_layers
from fms_worker.parallel.state import check_pipeline_parallel, check_tensor_parallel, get_parallel_state
from fms_worker.parallel.weights import iter_model_dir, stage_weights
from fms_worker.quantization.checkpoint import checkpoint_weights


class PipelineStage(nn.Module):
    def __init__(self, inner: nn.Module, prev_rank: int | None, next_rank: int | None):
        super().__init__()
        self.inner = inner
        self.args = inner.args
        self.prev_rank, self.next_rank = prev_rank, next_rank

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        body = self.inner.model
        if self.prev_rank is None:
            x, residual = body.embed_tokens(input_ids), None  # [T, hidden]
        else:
            x = torch.empty(input_ids.shape[0], self.args.hidden_size, dtype=body.norm.weight.dtype,
                            device=input_ids.device)
            residual = torch.empty_like(x)
            dist.recv(x, self.prev_rank)
            dist.recv(residual, self.prev_rank)
        for layer in body.layers:
            x, residual = layer(positions, x, residual, meta)
        if self.next_rank is not None:
            dist.send(x.contiguous(), self.next_rank)
            dist.send(residual.contiguous(), self.next_rank)
            return x  # not the model's output: only the last stage's hidden state is sampled from
        return body.final_norm(x, residual)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.gather_logits(self.local_logits(hidden))

    def local_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.next_rank is not None:
            # Earlier stages hold no final hidden state; their sampled tokens are discarded.
            return torch.zeros(hidden.shape[0], self.args.vocab_size, dtype=hidden.dtype, device=hidden.device)
        return self.inner.local_logits(hidden)

    def gather_logits(self, local: torch.Tensor) -> torch.Tensor:
        return local if self.next_rank is not None else self.inner.gather_logits(local)

    def attention_layers(self):
        return self.inner.attention_layers()


def build_parallel_model(model_dir: str | Path, hf_config, device: torch.device, dtype: torch.dtype,
                         stage_ranks: tuple[int | None, int | None] = (None, None), quant_method=None) -> nn.Module:
    """This rank's model: its tensor-parallel slice (set_parallel_state first) of its stage's layers.

    stage_ranks are the (previous, next) stage ranks; None at the ends.
    """
    state = get_parallel_state()
    cls = resolve_model_class(hf_config)
    args = cls.args_type.from_hf(hf_config)
    check_tensor_parallel(state.tp_size, args.num_heads, args.num_kv_heads)
    check_pipeline_parallel(state.pp_size, args.num_layers)
    first, last = stage_layers(args.num_layers, state.pp_size, state.pp_rank)
    with torch.device(device):
        model = cls(dataclasses.replace(args, num_layers=last - first), dtype, quant_method=quant_method)
    weights = checkpoint_weights(hf_config, model_dir, iter_model_dir(model_dir), dtype, quant_method is not None,
                                 names=lambda: tensor_names(model_dir))
    load_weights(model, stage_weights(weights, first, last))
    model.args = args  # the whole model's shape (vocab, max positions), as the runner expects
    model = model.eval()
    if state.pp_size == 1:
        return model
    return PipelineStage(model, *stage_ranks).eval()
