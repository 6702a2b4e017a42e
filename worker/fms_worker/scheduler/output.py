"""What the scheduler tells the model runner, and what the runner answers. Plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from fms_worker.engine.types import SamplingParams


@dataclass
class ScheduledSeq:
    seq_id: int
    token_ids: list[int]  # the whole sequence (a reference, not a copy); compute [start:start+num_new]
    start: int  # num_computed_tokens before this step
    num_new: int
    block_ids: list[int]
    sample: bool  # this chunk reaches the end of the sequence: sample the next token
    params: SamplingParams
    num_prompt_tokens: int
    seed: int | None = None
    inflight_input: bool = False  # the last input token was sampled by the previous, unresolved step


@dataclass
class SchedulerOutput:
    seqs: list[ScheduledSeq] = field(default_factory=list)
    num_batched_tokens: int = 0
    preempted_seq_ids: list[int] = field(default_factory=list)
    finished_seq_ids: list[int] = field(default_factory=list)  # since the last step: the runner drops their state

    @property
    def is_empty(self) -> bool:
        return not self.seqs


@dataclass
class ModelRunnerOutput:
    sampled: dict[int, int] = field(default_factory=dict)  # seq_id -> token id
    logprobs: dict[int, dict[int, float]] = field(default_factory=dict)  # seq_id -> {token: logprob}
