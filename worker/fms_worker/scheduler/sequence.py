"""One generated sequence: its tokens and how many of them the KV cache holds.

A request with n > 1 becomes n sequences; they differ only in `index` and in
the tokens they generate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fms_worker.engine.types import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: str
    index: int  # completion index within its request
    token_ids: list[int]  # prompt + generated
    num_prompt_tokens: int
    params: SamplingParams
    arrival: float
    # Tokens whose K/V are in the cache. The one rule: each step moves this
    # towards num_tokens; when it gets there, a token is sampled.
    num_computed_tokens: int = 0
    # Sampled on the GPU by a launched step but not yet known on the host (overlapped
    # scheduling): they count as tokens, and the runner feeds them from the GPU.
    num_inflight: int = 0
    status: SequenceStatus = SequenceStatus.WAITING
    pending_forks: int = 0  # siblings to fork once the prompt is computed (n > 1)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    logprobs: list[dict[int, float]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        """Known tokens plus those still in flight."""
        return len(self.token_ids) + self.num_inflight

    @property
    def num_output_tokens(self) -> int:
        """Generated tokens known on the host."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def will_finish_by_length(self) -> bool:
        """Its in-flight tokens already reach max_tokens (or the context): nothing more to compute."""
        return self.num_inflight > 0 and self.num_output_tokens + self.num_inflight >= self.params.max_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def seed(self) -> int | None:
        # Siblings get distinct, reproducible streams.
        return None if self.params.seed is None else self.params.seed + self.index

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
