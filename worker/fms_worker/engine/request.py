"""The engine's view of one request: its n completions as the caller sees them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from fms_worker.engine.detokenizer import IncrementalDetokenizer
from fms_worker.engine.types import CompletionOutput, RequestOutput, RequestTimes, SamplingParams


@dataclass
class RequestState:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    times: RequestTimes
    completions: list[CompletionOutput] = field(default_factory=list)
    detokenizers: list[IncrementalDetokenizer] = field(default_factory=list)
    num_cached_prompt_tokens: int = 0

    @classmethod
    def new(cls, request_id, prompt_token_ids, params, arrival, tokenizer) -> "RequestState":
        state = cls(request_id, list(prompt_token_ids), params, RequestTimes(arrival=arrival))
        for i in range(params.n):
            state.completions.append(
                CompletionOutput(index=i, token_ids=[], text="", logprobs=[] if params.logprobs is not None else None)
            )
            state.detokenizers.append(
                IncrementalDetokenizer(tokenizer, prompt_token_ids, params.skip_special_tokens, params.stop)
            )
        return state

    @property
    def finished(self) -> bool:
        return all(c.finished for c in self.completions)

    def clear_deltas(self) -> None:
        for c in self.completions:
            c.new_token_ids, c.new_text = [], ""

    def snapshot(self) -> RequestOutput:
        """The caller's copy of this step's state.

        Deltas are fresh lists every step, so they are the caller's to keep. The cumulative
        `token_ids`/`logprobs` of an unfinished completion are the live lists, and so are the
        unfinished request's `times` (copying them every step cost O(tokens so far) per sequence,
        which dominated the host's time per step at large batch); all are copied once it finishes.
        Built with plain constructors: this runs for every sequence on every step.
        """
        finished = self.finished
        return RequestOutput(self.request_id, self.prompt_token_ids, [_output(c) for c in self.completions], finished,
                             copy.copy(self.times) if finished else self.times, self.num_cached_prompt_tokens)


def _output(c: CompletionOutput) -> CompletionOutput:
    if c.finish_reason is None:
        return CompletionOutput(c.index, c.token_ids, c.text, c.new_token_ids, c.new_text, c.logprobs, None,
                                c.stop_reason)
    return CompletionOutput(c.index, list(c.token_ids), c.text, c.new_token_ids, c.new_text,
                            copy.deepcopy(c.logprobs), c.finish_reason, c.stop_reason)
