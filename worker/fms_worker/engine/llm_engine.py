"""LLMEngine: requests in, one step at a time, RequestOutputs out.

A step is schedule -> execute -> update. The scheduler decides which tokens
to compute (pure Python), the model runner computes them and samples, and the
update turns new tokens into the caller's deltas (detokenize, stop strings).

With async scheduling (the GPU default) a step is overlapped with the next:
schedule and launch step N+1, then wait for step N's tokens and post-process
them while the GPU runs N+1. A sequence that stops at step N has computed one
token too many at N+1; that token is dropped. Rows with penalties need every
token, so a step that holds one is waited for before the next is scheduled.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import AutoTokenizer, GenerationConfig

from fms_worker.config import WorkerConfig
from fms_worker.engine.distributed import make_runner
from fms_worker.device import DTYPES, resolve_device
from fms_worker.engine.context import context_limit
from fms_worker.engine.request import RequestState
from fms_worker.engine.types import EngineStats, RequestOutput, SamplingParams
from fms_worker.kv_cache import KVCacheManager
from fms_worker.loader.weights import load_hf_config
from fms_worker.scheduler import Scheduler, SchedulerConfig, SchedulerOutput, Sequence

log = logging.getLogger(__name__)

def _eos_ids(model_dir: str, tokenizer, hf_config) -> set[int]:
    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        eos = getattr(hf_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class LLMEngine:
    def __init__(self, config: WorkerConfig):
        self.config = config
        path = config.model.path
        self.device = resolve_device(config.runtime.device)
        self.dtype = DTYPES[config.precision.dtype]
        torch.manual_seed(config.runtime.seed)
        hf_config = load_hf_config(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.eos_token_ids = _eos_ids(path, self.tokenizer, hf_config)
        block_size = config.caching.block_size
        self.runner, self.topology = make_runner(config, hf_config, self.device, self.dtype)  # ranks spawned when TP/PP > 1
        if self.device.type == "cuda":
            self.runner.warm_up_kernels(config.batching.max_num_batched_tokens, config.batching.max_num_seqs)
        num_blocks = self._num_kv_blocks()
        self.runner.allocate_kv_cache(num_blocks)
        model_len = context_limit(hf_config, config.model.max_model_len)
        # One sequence alone must always fit, or preemption could not make progress.
        self.max_model_len = min(model_len, num_blocks * block_size)
        if self.device.type == "cuda" and not config.runtime.enforce_eager:
            self.runner.capture_graphs(min(config.batching.max_num_seqs, num_blocks), self.max_model_len)
        kv = KVCacheManager(num_blocks, block_size, config.caching.prefix_caching)
        b = config.batching
        sched_cfg = SchedulerConfig(b.max_num_seqs, b.max_num_batched_tokens, self.max_model_len, b.chunked_prefill)
        self.scheduler = Scheduler(sched_cfg, kv, self.eos_token_ids)
        self.requests: dict[str, RequestState] = {}
        self._aborted: list[RequestOutput] = []
        self.async_scheduling = self._async_scheduling()
        self._inflight: tuple[SchedulerOutput, object] | None = None  # launched, tokens not applied yet
        self._stats = EngineStats()
        log.info("engine ready: %s on %s (%s), %d KV blocks of %d tokens, max_model_len %d",
                 path, self.device, config.precision.dtype, num_blocks, block_size, self.max_model_len)

    def _async_scheduling(self) -> bool:
        mode = self.config.runtime.async_scheduling
        if mode == "auto":
            return self.device.type == "cuda" and self.config.parallel.pipeline == 1
        if mode == "on" and self.config.parallel.pipeline > 1:
            raise ValueError("runtime.async_scheduling=on needs parallel.pipeline 1 (stages run step by step); "
                             "set it to auto or off")
        return mode == "on"

    def _num_kv_blocks(self) -> int:
        caching = self.config.caching
        if caching.num_kv_blocks is not None:
            return caching.num_kv_blocks
        per_block = self.runner.kv_bytes_per_block()
        if self.device.type == "cpu":
            budget = caching.cpu_kv_cache_bytes
        else:
            budget = self.runner.profile_free_bytes(self.config.batching.max_num_batched_tokens,
                                                    caching.gpu_memory_utilization)
        blocks = budget // per_block
        if blocks < 1:
            raise RuntimeError(
                f"no memory left for the KV cache ({budget} bytes, {per_block} per block); "
                "raise caching.gpu_memory_utilization / cpu_kv_cache_bytes or lower batching.max_num_batched_tokens"
            )
        return blocks

    # ---- requests --------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    arrival: float | None = None) -> None:
        self._validate(request_id, prompt_token_ids, params)
        arrival = time.monotonic() if arrival is None else arrival
        state = RequestState.new(request_id, prompt_token_ids, params, arrival, self.tokenizer)
        # The scheduler may still refuse (n > max_num_seqs, ...): register the request only once it is in.
        self.scheduler.add(request_id, prompt_token_ids, params, arrival)
        self.requests[request_id] = state

    def abort_request(self, request_id: str) -> None:
        state = self.requests.pop(request_id, None)
        if state is None:
            return
        self.scheduler.abort(request_id)
        now = time.monotonic()
        state.clear_deltas()
        for c in state.completions:
            if not c.finished:
                c.finish_reason = "abort"
        state.times.finished = now
        self._aborted.append(state.snapshot())

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self._aborted) or self._inflight is not None

    # ---- the loop ----------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        started = time.monotonic()
        if not self.async_scheduling:
            sched = self.scheduler.schedule()
            result = self.runner.execute(sched)
            outputs = self._postprocess(sched, self.scheduler.update(sched, result))
            self._record(sched, time.monotonic() - started)
            return outputs
        outputs = []
        if self._inflight is not None and any(s.params.uses_history for s in self._inflight[0].seqs):
            outputs = self._land()
        sched = self.scheduler.schedule()
        launched = self.runner.launch(sched)  # queued behind the step in flight
        self.scheduler.advance(sched)
        outputs += self._land()  # the previous step's tokens, while the GPU runs this one
        self._inflight = None if sched.is_empty else (sched, launched)
        self._record(sched, time.monotonic() - started)
        return outputs

    def _land(self) -> list[RequestOutput]:
        """Apply the step in flight (if any): its tokens to the scheduler, its deltas to the caller."""
        if self._inflight is None:
            return self._postprocess(SchedulerOutput(), [])
        sched, launched = self._inflight
        self._inflight = None
        return self._postprocess(sched, self.scheduler.apply(sched, self.runner.resolve(launched)))

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[RequestOutput]:
        """Offline helper: run everything to completion, outputs in prompt order."""
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"generate-{time.monotonic_ns()}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, params_list):
            self.add_request(rid, prompt, p)
        done: dict[str, RequestOutput] = {}
        while len(done) < len(ids):
            for out in self.step():
                if out.finished:
                    done[out.request_id] = out
        return [done[rid] for rid in ids]

    def stats(self) -> EngineStats:
        s, pool = self.scheduler, self.scheduler.kv.pool
        self._stats.num_running, self._stats.num_waiting = len(s.running), len(s.waiting)
        self._stats.kv_cache_usage, self._stats.num_kv_blocks, self._stats.num_free_kv_blocks = (
            pool.usage, pool.num_blocks, pool.num_free)
        self._stats.prefix_cache_queries, self._stats.prefix_cache_hits = s.kv.prefix_queries, s.kv.prefix_hits
        self._stats.num_preemptions = s.num_preemptions
        self._stats.prompt_tokens, self._stats.generation_tokens = s.num_prompt_tokens, s.num_generation_tokens
        return self._stats

    # ---- internals ---------------------------------------------------------------
    def _validate(self, request_id: str, prompt: list[int], params: SamplingParams) -> None:
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt:
            raise ValueError("the prompt is empty; send at least one token")
        vocab = self.runner.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must lie in [0, {vocab})")
        problems = [
            (params.n < 1, f"n must be >= 1, got {params.n}"),
            (params.temperature < 0, f"temperature must be >= 0, got {params.temperature}"),
            (not 0 < params.top_p <= 1, f"top_p must be in (0, 1], got {params.top_p}"),
            (params.top_k < 0, f"top_k must be >= 0 (0 disables), got {params.top_k}"),
            (not 0 <= params.min_p <= 1, f"min_p must be in [0, 1], got {params.min_p}"),
            (params.repetition_penalty <= 0, f"repetition_penalty must be > 0, got {params.repetition_penalty}"),
            (not -2 <= params.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {params.presence_penalty}"),
            (not -2 <= params.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {params.frequency_penalty}"),
            (params.max_tokens < 1, f"max_tokens must be >= 1, got {params.max_tokens}"),
            (params.logprobs is not None and not 0 <= params.logprobs <= 20, f"logprobs must be in [0, 20], got {params.logprobs}"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(message)
        if len(prompt) + params.max_tokens > self.max_model_len:
            raise ValueError(
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has {len(prompt)} "
                f"and max_tokens is {params.max_tokens} ({len(prompt) + params.max_tokens} in all); "
                "shorten the prompt or lower max_tokens"
            )

    def _postprocess(self, sched: SchedulerOutput, progressed: list[Sequence]) -> list[RequestOutput]:
        now = time.monotonic()
        outputs, self._aborted = self._aborted, []
        touched: dict[str, RequestState] = {}
        for seq in progressed:
            state = self.requests.get(seq.request_id)
            if state is None:
                continue
            if seq.request_id not in touched:
                state.clear_deltas()
                touched[seq.request_id] = state
            self._append_token(state, seq, now)
        for rid, state in touched.items():
            outputs.append(state.snapshot())
            if state.finished:
                del self.requests[rid]
        scheduled = {item.seq_id for item in sched.seqs}
        for seq in self.scheduler.running:
            state = self.requests.get(seq.request_id)
            if seq.seq_id in scheduled and state is not None and state.times.first_scheduled is None:
                state.times.first_scheduled = now
        return outputs

    def _append_token(self, state: RequestState, seq: Sequence, now: float) -> None:
        comp, detok = state.completions[seq.index], state.detokenizers[seq.index]
        token = seq.token_ids[-1]
        detok.append(token)
        if detok.hit is not None and not seq.is_finished:
            self.scheduler.finish(seq, "stop", detok.hit)
        elif detok.hit is not None:  # the stop string arrived with a stop token or the length limit
            seq.finish_reason, seq.stop_reason = "stop", detok.hit
        comp.token_ids.append(token)
        comp.new_token_ids.append(token)
        if comp.logprobs is not None and seq.logprobs:
            comp.logprobs.append(seq.logprobs[-1])
        comp.text = detok.text
        comp.new_text = detok.delta(seq.is_finished)
        if seq.is_finished:
            comp.finish_reason, comp.stop_reason = seq.finish_reason, seq.stop_reason
        if state.times.first_token is None:
            state.times.first_token = now
            state.num_cached_prompt_tokens = seq.num_cached_tokens
        state.times.last_token = now
        if state.finished:
            state.times.finished = now

    def _record(self, sched: SchedulerOutput, seconds: float) -> None:
        self._stats.steps += 1
        self._stats.last_step_seconds = seconds
        self._stats.last_batch_size = len(sched.seqs)
        self._stats.last_batch_tokens = sched.num_batched_tokens
