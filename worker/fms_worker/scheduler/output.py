"""What the scheduler tells the model runner, and what the runner answers. Plain data."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fms_worker.engine.types import SamplingParams


@dataclass
class ScheduledSeq:
    seq_id: int
    token_ids: list[int]  # the whole sequence (a reference, not a copy); compute input_ids = [start:start+num_new]
    start: int  # num_computed_tokens before this step
    num_new: int
    block_ids: list[int]
    sample: bool  # this chunk reaches the end of the sequence: sample the next token
    params: SamplingParams
    num_prompt_tokens: int
    seed: int | None = None
    inflight_input: bool = False  # the last input token was sampled by the previous, unresolved step
    token_offset: int = 0  # token_ids[0] is the sequence's token at this position (a rank's compact copy)

    @property
    def input_ids(self) -> list[int]:
        """This step's input ids known on the host (one short when the last is in flight)."""
        begin = self.start - self.token_offset
        return self.token_ids[begin : begin + self.num_new]

    def for_followers(self) -> "ScheduledSeq":
        """What the other ranks read: this step's input ids, not the whole (ever longer) sequence.

        Rows with penalties keep their full history: sampling reads it (under pipeline parallelism the
        last stage's draw is the one kept).
        """
        if self.params.uses_history or self.token_offset:
            return self
        return replace(self, token_ids=self.input_ids, token_offset=self.start)


@dataclass
class SchedulerOutput:
    seqs: list[ScheduledSeq] = field(default_factory=list)
    num_batched_tokens: int = 0
    preempted_seq_ids: list[int] = field(default_factory=list)
    finished_seq_ids: list[int] = field(default_factory=list)  # since the last step: the runner drops their state

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    def for_followers(self) -> "SchedulerOutput":
        """The step as broadcast to the other ranks; pickling full token lists every step grows with context."""
        return replace(self, seqs=[s.for_followers() for s in self.seqs])


@dataclass
class ModelRunnerOutput:
    sampled: dict[int, int] = field(default_factory=dict)  # seq_id -> token id
    logprobs: dict[int, dict[int, float]] = field(default_factory=dict)  # seq_id -> {token: logprob}
