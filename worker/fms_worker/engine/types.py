"""Plain data that crosses the engine's boundary (server <-> engine).

No torch here: the HTTP layer and the metrics exporter import these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # top-n logprobs per generated token; None disables
    skip_special_tokens: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_history(self) -> bool:
        """Penalties read every generated token, so the next draw must wait for the last one."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]  # all generated so far (a live list until finished: copy it to keep it)
    text: str  # detokenized so far (stop string, if hit, removed)
    new_token_ids: list[int] = field(default_factory=list)  # produced by the latest step
    new_text: str = ""  # text delta for streaming
    # For each generated token: {token_id: logprob} of the top-n plus the chosen one.
    logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestTimes:
    arrival: float  # time.monotonic() at add_request
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    times: RequestTimes
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass
class EngineStats:
    """A snapshot the metrics exporter and the autoscaling signals read."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # used blocks / total blocks
    num_kv_blocks: int = 0
    num_free_kv_blocks: int = 0
    prefix_cache_queries: int = 0  # tokens looked up (cumulative)
    prefix_cache_hits: int = 0  # tokens found (cumulative)
    num_preemptions: int = 0  # cumulative
    prompt_tokens: int = 0  # cumulative, computed (not cached) prefill tokens
    generation_tokens: int = 0  # cumulative
    steps: int = 0  # cumulative
    last_step_seconds: float = 0.0
    last_batch_size: int = 0  # sequences in the latest step
    last_batch_tokens: int = 0  # tokens in the latest step
