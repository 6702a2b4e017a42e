"""FCFS continuous batching with chunked prefill, prefix hits and preemption by recompute.

Every step spends a token budget. Running sequences go first (oldest first),
then waiting ones are admitted while budget, blocks and seats last. Prefill,
chunked prefill, decode and prefix hits are one path: a sequence gets
min(num_tokens - num_computed_tokens, budget left) tokens. When blocks run
out, the newest running sequence is preempted: its blocks are freed and it
goes back to the front of the queue to be recomputed later.

A step's result comes back in two halves, so the engine can schedule step
N+1 while the GPU still runs step N: `advance` right after the launch (the
KV is as good as written: the GPU runs steps in order), `apply` once the
sampled tokens reach the host. Between the two, a sampling sequence has one
token in flight: it is scheduled like any other, and the runner reads it
from the GPU.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from fms_worker.engine.types import SamplingParams
from fms_worker.kv_cache import KVCacheManager
from fms_worker.scheduler.output import ModelRunnerOutput, ScheduledSeq, SchedulerOutput
from fms_worker.scheduler.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    chunked_prefill: bool = True


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, eos_token_ids: set[int] | None = None):
        self.config = config
        self.kv = kv
        self.eos_token_ids = frozenset(eos_token_ids or ())
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.live: dict[int, Sequence] = {}  # every unfinished sequence, running or waiting
        self._seq_ids = itertools.count()
        self._finished_since_step: list[int] = []
        self.num_preemptions = 0
        self.num_prompt_tokens = 0  # computed (not cached) prompt tokens
        self.num_generation_tokens = 0

    # ---- requests in and out -------------------------------------------------
    def add(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, arrival: float) -> Sequence:
        if params.n > self.config.max_num_seqs:
            raise ValueError(f"n={params.n} exceeds batching.max_num_seqs={self.config.max_num_seqs}")
        if not self.config.chunked_prefill and len(prompt_token_ids) > self.config.max_num_batched_tokens:
            raise ValueError(
                f"prompt of {len(prompt_token_ids)} tokens exceeds batching.max_num_batched_tokens="
                f"{self.config.max_num_batched_tokens} with chunked prefill off; shorten it or enable chunked_prefill"
            )
        seq = Sequence(
            next(self._seq_ids), request_id, 0, list(prompt_token_ids), len(prompt_token_ids), params, arrival,
            pending_forks=params.n - 1,
        )
        self.waiting.append(seq)
        self.live[seq.seq_id] = seq
        return seq

    def abort(self, request_id: str) -> list[Sequence]:
        seqs = [s for s in (*self.running, *self.waiting) if s.request_id == request_id]
        for seq in seqs:
            self.finish(seq, "abort")
        return seqs

    def finish(self, seq: Sequence, reason: str, stop_reason: str | int | None = None) -> None:
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        del self.live[seq.seq_id]
        seq.finish_reason, seq.stop_reason = reason, stop_reason
        self.kv.forget(seq)
        self._finished_since_step.append(seq.seq_id)

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting)

    # ---- one step ----------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput(finished_seq_ids=self._finished_since_step)
        self._finished_since_step = []
        budget = self.config.max_num_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []

        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.will_finish_by_length or (seq.num_inflight and seq.num_tokens >= self.config.max_model_len):
                i += 1  # finishes when its in-flight token lands; computing more would be thrown away
                continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self.config.chunked_prefill and num_new < seq.num_tokens - seq.num_computed_tokens:
                i += 1
                continue
            while not self.kv.allocate_slots(seq, num_new):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted_seq_ids.append(victim.seq_id)
                if victim is seq:
                    break
            else:
                scheduled.append((seq, num_new))
                budget -= num_new
                i += 1

        # Admitting while preempting would only evict the newcomers again.
        while self.waiting and budget > 0 and not out.preempted_seq_ids:
            seq = self.waiting[0]
            if len(self.running) + 1 + seq.pending_forks > self.config.max_num_seqs or seq.num_inflight:
                break
            hits, num_hit = self.kv.get_computed_blocks(seq)
            remaining = seq.num_tokens - num_hit
            if not self.config.chunked_prefill and remaining > budget:
                break
            num_new = min(remaining, budget)
            if not self.kv.allocate_slots(seq, num_new, hits):
                break
            self.kv.record_lookup(seq.num_tokens, num_hit)
            self.waiting.popleft()
            if seq.num_output_tokens == 0:
                seq.num_cached_tokens = num_hit
            seq.num_computed_tokens = num_hit
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduled.append((seq, num_new))
            budget -= num_new

        for seq, num_new in scheduled:
            out.seqs.append(
                ScheduledSeq(
                    seq.seq_id, seq.token_ids, seq.num_computed_tokens, num_new, self.kv.block_ids(seq.seq_id),
                    seq.num_computed_tokens + num_new == seq.num_tokens, seq.params, seq.num_prompt_tokens, seq.seed,
                    inflight_input=seq.num_computed_tokens + num_new > len(seq.token_ids),
                )
            )
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget
        return out

    def update(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[Sequence]:
        """Apply a finished step in one go; return the sequences that produced a token."""
        self.advance(sched)
        return self.apply(sched, result)

    def advance(self, sched: SchedulerOutput) -> None:
        """The step is launched: its tokens count as computed, and each sampling row has a token in flight."""
        for item in sched.seqs:
            seq = self.live.get(item.seq_id)
            if seq is None or seq.status is not SequenceStatus.RUNNING:  # aborted meanwhile
                continue
            self.num_prompt_tokens += max(0, min(seq.num_prompt_tokens, item.start + item.num_new) - item.start)
            seq.num_computed_tokens = item.start + item.num_new
            if item.sample:
                seq.num_inflight += 1

    def apply(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[Sequence]:
        """The step's sampled tokens are on the host: append them, fork, check stops."""
        progressed: list[Sequence] = []
        for item in sched.seqs:
            seq = self.live.get(item.seq_id)
            if seq is None:  # finished or aborted since the launch: its token is dropped
                continue
            self.kv.cache_computed(seq)
            if not item.sample:
                continue
            seq.num_inflight -= 1
            token = result.sampled.get(seq.seq_id)
            if token is None:
                continue
            seq.token_ids.append(token)
            if seq.seq_id in result.logprobs:
                seq.logprobs.append(result.logprobs[seq.seq_id])
            self.num_generation_tokens += 1
            progressed.append(seq)
            if seq.pending_forks:
                self._fork(seq)
            self._check_stop(seq, token)
        return progressed

    # ---- internals -----------------------------------------------------------
    def _check_stop(self, seq: Sequence, token: int) -> None:
        params = seq.params
        if token in params.stop_token_ids:
            self.finish(seq, "stop", token)
        elif not params.ignore_eos and token in self.eos_token_ids:
            self.finish(seq, "stop")
        elif seq.num_output_tokens >= params.max_tokens or len(seq.token_ids) >= self.config.max_model_len:
            self.finish(seq, "length")

    def _fork(self, leader: Sequence) -> list[Sequence]:
        """Siblings share the prompt's full blocks and recompute only its partial tail (< one block),
        so each samples its own first token from the same logits without copying KV."""
        prompt = leader.token_ids[: leader.num_prompt_tokens]
        num_shared = (len(prompt) - 1) // self.kv.block_size
        siblings = []
        for index in range(1, leader.pending_forks + 1):
            sib = Sequence(
                next(self._seq_ids), leader.request_id, index, list(prompt), len(prompt), leader.params, leader.arrival,
                num_computed_tokens=num_shared * self.kv.block_size, status=SequenceStatus.RUNNING,
                num_cached_tokens=leader.num_cached_tokens,
            )
            self.kv.fork(leader, sib, num_shared)
            self.running.append(sib)
            self.live[sib.seq_id] = sib
            siblings.append(sib)
        leader.pending_forks = 0
        return siblings

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
