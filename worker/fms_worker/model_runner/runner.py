"""Owns the model, the KV cache tensors and the per-sequence sampling state."""

from __future__ import annotations

import logging

import torch

from fms_worker.loader import load_model
from fms_worker.model_runner.inputs import build_inputs
from fms_worker.sampling import Sampler, SamplingBatch
from fms_worker.scheduler.output import ModelRunnerOutput, SchedulerOutput

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model_dir: str, hf_config, device: torch.device, dtype: torch.dtype, block_size: int):
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.model = load_model(model_dir, device, dtype, hf_config)
        self.vocab_size = self.model.args.vocab_size
        self.sampler = Sampler()
        self.generators: dict[int, torch.Generator] = {}
        self.num_blocks = 0

    # ---- KV cache sizing -----------------------------------------------------
    def kv_bytes_per_block(self) -> int:
        attn = self.model.attention_layers()
        per_layer = 2 * self.block_size * attn[0].num_kv_heads * attn[0].head_dim
        return per_layer * len(attn) * torch.tensor([], dtype=self.dtype).element_size()

    def profile_free_bytes(self, max_num_batched_tokens: int, gpu_memory_utilization: float) -> int:
        """GPU: run a full-budget forward, then hand what is left of the allowed share to the cache."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.allocate_kv_cache(1)
        ids = torch.zeros(max_num_batched_tokens, dtype=torch.long, device=self.device)
        from fms_worker.layers.attention import AttentionMetadata, PrefillSpan

        meta = AttentionMetadata(slot_mapping=torch.zeros_like(ids), prefills=[PrefillSpan(0, len(ids), None, None)])
        with torch.inference_mode():
            hidden = self.model(ids, torch.arange(len(ids), device=self.device) % self.model.args.max_position, meta)
            self.model.compute_logits(hidden[-256:])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        _, total = torch.cuda.mem_get_info(self.device)
        self.allocate_kv_cache(0)
        return max(0, int(total * gpu_memory_utilization) - peak)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        for attn in self.model.attention_layers():
            attn.kv_cache = torch.zeros(2, num_blocks * self.block_size, attn.num_kv_heads, attn.head_dim,
                                        dtype=self.dtype, device=self.device)  # [2, slots, Hkv, D]

    # ---- one step ------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        for seq_id in sched.finished_seq_ids:
            self.generators.pop(seq_id, None)
        if sched.is_empty:
            return ModelRunnerOutput()
        inputs = build_inputs(sched.seqs, self.block_size, self.device)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.meta)  # [T, hidden]
        if not inputs.sampling_seqs:
            return ModelRunnerOutput()
        logits = self.model.compute_logits(hidden[inputs.logits_rows])  # [S, V]
        batch = SamplingBatch.build(
            [s.params for s in inputs.sampling_seqs],
            [(s.token_ids, s.num_prompt_tokens) for s in inputs.sampling_seqs],
            [self._generator(s.seq_id, s.seed) for s in inputs.sampling_seqs],
            self.vocab_size,
            self.device,
        )
        out = self.sampler(logits, batch)
        return self._to_host(inputs.sampling_seqs, out)

    def _generator(self, seq_id: int, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        if seq_id not in self.generators:
            self.generators[seq_id] = torch.Generator(device=self.device).manual_seed(seed)
        return self.generators[seq_id]

    @staticmethod
    def _to_host(seqs, out) -> ModelRunnerOutput:
        """The step's one host sync point."""
        tokens = out.token_ids.tolist()
        result = ModelRunnerOutput(sampled={s.seq_id: t for s, t in zip(seqs, tokens)})
        if out.chosen_logprobs is None:
            return result
        chosen = out.chosen_logprobs.tolist()
        top_ids = out.top_ids.tolist() if out.top_ids is not None else [[] for _ in seqs]
        top_lps = out.top_logprobs.tolist() if out.top_logprobs is not None else [[] for _ in seqs]
        for s, t, c, ids, lps in zip(seqs, tokens, chosen, top_ids, top_lps):
            if s.params.logprobs is None:
                continue
            entry = dict(zip(ids[: s.params.logprobs], lps[: s.params.logprobs]))
            entry[t] = c
            result.logprobs[s.seq_id] = entry
        return result
