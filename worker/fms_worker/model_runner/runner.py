"""Owns the model, the KV cache tensors and the per-sequence sampling state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fms_worker.layers import fused
from fms_worker.layers.attention import TorchSDPABackend
from fms_worker.layers.attention_triton import TritonPagedBackend
from fms_worker.loader import load_model
from fms_worker.model_runner.cuda_graphs import DecodeGraphs
from fms_worker.model_runner.inputs import build_inputs
from fms_worker.model_runner.paged_inputs import build_paged_inputs
from fms_worker.parallel.state import get_parallel_state
from fms_worker.sampling import Sampler, SamplingBatch
from fms_worker.scheduler.output import ModelRunnerOutput, SchedulerOutput

log = logging.getLogger(__name__)


@dataclass
class LaunchedStep:
    """A step queued on the device whose sampled tokens may not have reached the host yet."""

    seqs: list  # the sampling rows' ScheduledSeqs, in row order
    host: dict[str, torch.Tensor]  # token_ids (+ logprob tensors): host copies, valid once `ready` fired
    ready: torch.cuda.Event | None  # None on CPU, where the copies are done on return


class ModelRunner:
    def __init__(self, model_dir: str, hf_config, device: torch.device, dtype: torch.dtype, block_size: int,
                 enforce_eager: bool = False, model: torch.nn.Module | None = None, quant_method=None,
                 kv_cache_dtype: torch.dtype | None = None, tp_invariant: bool = False):
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.kv_cache_dtype = kv_cache_dtype or dtype
        # GPU: Triton paged attention over block tables, fused elementwise kernels and decode CUDA graphs
        # (the latter two unless enforce_eager). CPU: the eager SDPA path, the same math.
        self.gpu = device.type == "cuda"
        fused.enable(self.gpu and not enforce_eager, deterministic=tp_invariant)
        self.model = model if model is not None else load_model(model_dir, device, dtype, hf_config,  # TP/PP: a slice
                                                                quant_method=quant_method)
        self.vocab_size = self.model.args.vocab_size
        # Decode attention splits each sequence's keys by how many KV heads fill the GPU; in tree mode it counts
        # the model's, not this rank's, so every tensor degree splits (and adds the splits) as one GPU does.
        local_kv_heads = self.model.attention_layers()[0].num_kv_heads
        self.split_kv_heads = self.model.args.num_kv_heads if tp_invariant else local_kv_heads
        self._set_backend(TritonPagedBackend if self.gpu else TorchSDPABackend)
        self.sampler = Sampler()
        self.generators: dict[int, torch.Generator] = {}
        self.num_blocks = 0
        self.graphs: DecodeGraphs | None = None
        self._last_rows: dict[int, int] = {}  # seq_id -> row of _last_tokens (the latest launch's draw)
        self._last_tokens: torch.Tensor | None = None

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

    def warm_up_kernels(self, max_rows: int, max_logit_rows: int) -> None:
        """Kernels that tune themselves per shape on first use do it now, for every row count a step can have
        (`max_logit_rows` for the LM head), instead of inside the first requests (the int8 matmul: seconds per
        new row-count bucket)."""
        t = time.perf_counter()
        warmed = set()  # layers of one shape and method (every decoder layer's) tune the same kernels
        with torch.inference_mode():
            for module in self.model.modules():
                method = getattr(module, "quant_method", None)
                if method is None:
                    continue
                head = getattr(module, "float32_out", False)  # the LM head: float32 logits
                key = (type(method), head, tuple((p.shape, p.dtype) for p in module.parameters(recurse=False)))
                if key in warmed:
                    continue
                warmed.add(key)
                if head:
                    method.warm_up(module, max_logit_rows, float32_out=True)
                else:
                    method.warm_up(module, max_rows)
        if self.gpu:
            torch.cuda.synchronize(self.device)
        log.info("kernel warm-up for up to %d rows a step: %.1f s", max_rows, time.perf_counter() - t)

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
            block_size=self.block_size, scratch_block=self.num_blocks, num_kv_heads=self.split_kv_heads,
            max_model_len=max_model_len, device=self.device,
        )
        return self.graphs.capture()

    def release_graphs(self) -> None:
        """Drop the decode graphs before the process group goes: NCCL cannot destroy a communicator whose
        kernels live graphs still hold (destroy_process_group hangs, pytorch/pytorch#115388)."""
        if self.graphs is not None:
            self.graphs = None
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    # ---- one step ------------------------------------------------------------
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        """Run a step and wait for its tokens."""
        return self.resolve(self.launch(sched))

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput) -> LaunchedStep | None:
        """Queue a step on the device without waiting for it (no host sync on the GPU path).

        Inputs marked in flight are the previous launch's sampled tokens, read on the device.
        """
        for seq_id in sched.finished_seq_ids:
            self.generators.pop(seq_id, None)
        if sched.is_empty:
            return None
        logits, inputs = self._forward(sched)
        if logits is None:
            return None
        batch = SamplingBatch.build(
            [s.params for s in inputs.sampling_seqs],
            # Only penalty rows read their history (other ranks get just the step's ids for the rest).
            [(s.token_ids, s.num_prompt_tokens) if s.params.uses_history else ([], 0) for s in inputs.sampling_seqs],
            [self._generator(s.seq_id, s.seed) for s in inputs.sampling_seqs],
            self.vocab_size,
            self.device,
        )
        out = self.sampler(logits, batch)
        self._share_draw(out.token_ids)
        self._last_rows = {s.seq_id: i for i, s in enumerate(inputs.sampling_seqs)}
        self._last_tokens = out.token_ids
        return self._copy_to_host(inputs.sampling_seqs, out)

    def resolve(self, step: LaunchedStep | None) -> ModelRunnerOutput:
        """Wait for a launched step's tokens (the step's one host sync)."""
        if step is None:
            return ModelRunnerOutput()
        if step.ready is not None:
            step.ready.synchronize()
        return self._to_host(step.seqs, step.host)

    def _forward(self, sched: SchedulerOutput):
        """(logits [S, V] of the sampling rows or None, step inputs)."""
        if self.gpu:
            inputs = build_paged_inputs(sched.seqs, self.block_size, self.device, self.num_blocks, self.split_kv_heads)
        else:
            inputs = build_inputs(sched.seqs, self.block_size, self.device)
        self._fill_inflight(inputs)
        if self.graphs is not None and self.graphs.can_run(inputs):  # graphs exist only on the GPU path
            return self.graphs.run(inputs), inputs
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

    def _fill_inflight(self, inputs) -> None:
        """Inputs sampled by the previous launch: copied on the device, never through the host."""
        if not inputs.inflight_rows:
            return
        dst = [row for row, _ in inputs.inflight_rows]
        src = [self._last_rows[seq_id] for _, seq_id in inputs.inflight_rows]
        inputs.input_ids[_index(dst, self.device)] = self._last_tokens[_index(src, self.device)]

    def _share_draw(self, token_ids: torch.Tensor) -> None:
        """Tensor-parallel ranks take the first rank's draw, so their next in-flight inputs agree."""
        state = get_parallel_state()
        if state.tp_size > 1 and state.pp_size == 1:
            dist.broadcast(token_ids, src=dist.get_global_rank(state.group, 0), group=state.group)

    def _copy_to_host(self, seqs, out) -> LaunchedStep:
        tensors = {"token_ids": out.token_ids}
        for name in ("chosen_logprobs", "top_ids", "top_logprobs"):
            if getattr(out, name) is not None:
                tensors[name] = getattr(out, name)
        if not self.gpu:
            return LaunchedStep(seqs, tensors, None)
        host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True).copy_(v, non_blocking=True)
                for k, v in tensors.items()}
        ready = torch.cuda.Event()
        ready.record()
        return LaunchedStep(seqs, host, ready)

    @staticmethod
    def _to_host(seqs, host: dict[str, torch.Tensor]) -> ModelRunnerOutput:
        tokens = host["token_ids"].tolist()
        result = ModelRunnerOutput(sampled={s.seq_id: t for s, t in zip(seqs, tokens)})
        if "chosen_logprobs" not in host:
            return result
        chosen = host["chosen_logprobs"].tolist()
        top_ids = host["top_ids"].tolist() if "top_ids" in host else [[] for _ in seqs]
        top_lps = host["top_logprobs"].tolist() if "top_logprobs" in host else [[] for _ in seqs]
        for s, t, c, ids, lps in zip(seqs, tokens, chosen, top_ids, top_lps):
            if s.params.logprobs is None:
                continue
            entry = dict(zip(ids[: s.params.logprobs], lps[: s.params.logprobs]))
            entry[t] = c
            result.logprobs[s.seq_id] = entry
        return result


def _index(values: list[int], device: torch.device) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.long)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t
