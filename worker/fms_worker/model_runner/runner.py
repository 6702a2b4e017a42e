"""Owns the model, the KV cache tensors and the per-sequence sampling state."""

from __future__ import annotations

import logging

import torch

from fms_worker.layers import fused
from fms_worker.layers.attention import TorchSDPABackend
from fms_worker.layers.attention_triton import TritonPagedBackend
from fms_worker.loader import load_model
from fms_worker.model_runner.cuda_graphs import DecodeGraphs
from fms_worker.model_runner.inputs import build_inputs
from fms_worker.model_runner.paged_inputs import build_paged_inputs
from fms_worker.sampling import Sampler, SamplingBatch
from fms_worker.scheduler.output import ModelRunnerOutput, SchedulerOutput

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model_dir: str, hf_config, device: torch.device, dtype: torch.dtype, block_size: int,
                 enforce_eager: bool = False, model: torch.nn.Module | None = None, quant_method=None,
                 kv_cache_dtype: torch.dtype | None = None):
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.kv_cache_dtype = kv_cache_dtype or dtype
        # GPU: Triton paged attention over block tables, fused elementwise kernels and decode CUDA graphs
        # (the latter two unless enforce_eager). CPU: the eager SDPA path, the same math.
        self.gpu = device.type == "cuda"
        fused.enable(self.gpu and not enforce_eager)
        self.model = model if model is not None else load_model(model_dir, device, dtype, hf_config,  # TP/PP: a slice
                                                                quant_method=quant_method)
        self.vocab_size = self.model.args.vocab_size
        self.num_kv_heads = self.model.attention_layers()[0].num_kv_heads
        self._set_backend(TritonPagedBackend if self.gpu else TorchSDPABackend)
        self.sampler = Sampler()
        self.generators: dict[int, torch.Generator] = {}
        self.num_blocks = 0
        self.graphs: DecodeGraphs | None = None

    def _set_backend(self, kind) -> None:
        for attn in self.model.attention_layers():
            attn.backend = kind()

    # ---- KV cache sizing -----------------------------------------------------
    def kv_bytes_per_block(self) -> int:
        attn = self.model.attention_layers()
        per_layer = 2 * self.block_size * attn[0].num_kv_heads * attn[0].head_dim
        return per_layer * len(attn) * self.kv_cache_dtype.itemsize

    def profile_free_bytes(self, max_num_batched_tokens: int, gpu_memory_utilization: float) -> int:
        """GPU: run a full-budget forward, then hand what is left of the allowed share to the cache."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.allocate_kv_cache(1)
        ids = torch.zeros(max_num_batched_tokens, dtype=torch.long, device=self.device)
        from fms_worker.layers.attention import AttentionMetadata, PrefillSpan

        meta = AttentionMetadata(slot_mapping=torch.zeros_like(ids), prefills=[PrefillSpan(0, len(ids), None, None)])
        self._set_backend(TorchSDPABackend)
        with torch.inference_mode():
            hidden = self.model(ids, torch.arange(len(ids), device=self.device) % self.model.args.max_position, meta)
            self.model.compute_logits(hidden[-256:])
        torch.cuda.synchronize(self.device)
        self._set_backend(TritonPagedBackend)
        peak = torch.cuda.max_memory_allocated(self.device)
        _, total = torch.cuda.mem_get_info(self.device)
        self.allocate_kv_cache(0)
        return max(0, int(total * gpu_memory_utilization) - peak)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        # On GPU one extra block (index num_blocks) is scratch: padding rows of a step write and read only there.
        slots = (num_blocks + self.gpu) * self.block_size
        for attn in self.model.attention_layers():
            attn.kv_cache = torch.zeros(2, slots, attn.num_kv_heads, attn.head_dim,
                                        dtype=self.kv_cache_dtype, device=self.device)  # [2, slots, Hkv, D]

    def capture_graphs(self, max_batch: int, max_model_len: int) -> float:
        """Decode CUDA graphs for batch sizes up to max_batch; returns seconds spent."""
        self.graphs = DecodeGraphs(
            self.model, max_batch=max_batch, max_blocks_per_seq=-(-max_model_len // self.block_size),
            block_size=self.block_size, scratch_block=self.num_blocks, num_kv_heads=self.num_kv_heads,
            max_model_len=max_model_len, device=self.device,
        )
        return self.graphs.capture()

    # ---- one step ------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        for seq_id in sched.finished_seq_ids:
            self.generators.pop(seq_id, None)
        if sched.is_empty:
            return ModelRunnerOutput()
        logits, inputs = self._forward(sched)
        if logits is None:
            return ModelRunnerOutput()
        batch = SamplingBatch.build(
            [s.params for s in inputs.sampling_seqs],
            [(s.token_ids, s.num_prompt_tokens) for s in inputs.sampling_seqs],
            [self._generator(s.seq_id, s.seed) for s in inputs.sampling_seqs],
            self.vocab_size,
            self.device,
        )
        out = self.sampler(logits, batch)
        return self._to_host(inputs.sampling_seqs, out)

    def _forward(self, sched: SchedulerOutput):
        """(logits [S, V] of the sampling rows or None, step inputs)."""
        if self.gpu:
            inputs = build_paged_inputs(sched.seqs, self.block_size, self.device, self.num_blocks, self.num_kv_heads)
            if self.graphs is not None and self.graphs.can_run(inputs):
                return self.graphs.run(inputs), inputs
        else:
            inputs = build_inputs(sched.seqs, self.block_size, self.device)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.meta)  # [T, hidden]
        if not inputs.sampling_seqs:
            return None, inputs
        return self.model.compute_logits(hidden[inputs.logits_rows]), inputs  # [S, V]

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
