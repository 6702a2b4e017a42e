"""Request bodies -> prompt token ids and SamplingParams, with the 400s that say what to change.

Pure functions over a tokenizer and the model's limits; the routes only call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fms_worker.engine.types import SamplingParams
from fms_worker.server.errors import APIError
from fms_worker.server.protocol import ChatCompletionRequest, CompletionRequest

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


@dataclass(frozen=True)
class ModelLimits:
    served_name: str
    max_model_len: int
    vocab_size: int
    max_num_seqs: int = 1 << 30


def check_model(name: str | None, limits: ModelLimits) -> None:
    if name is not None and name != limits.served_name:
        raise APIError(400, f"model {name!r} is not served here; use {limits.served_name!r} (see GET /v1/models)",
                       param="model", code="model_not_found")


def completion_prompts(req: CompletionRequest, tokenizer: Any, limits: ModelLimits) -> list[list[int]]:
    """One token list per prompt in the request (a batch of prompts fans out to several engine requests)."""
    p = req.prompt
    if isinstance(p, str):
        prompts = [_encode(tokenizer, p)]
    elif p and all(isinstance(x, str) for x in p):
        prompts = [_encode(tokenizer, x) for x in p]
    elif p and all(isinstance(x, list) for x in p):
        prompts = [list(x) for x in p]
    elif p and all(isinstance(x, int) for x in p):
        prompts = [list(p)]
    else:
        raise APIError(400, "prompt must be a non-empty string, list of strings, or list of token ids", param="prompt")
    for ids in prompts:
        _check_prompt(ids, limits, "prompt")
    return prompts


def chat_prompt(req: ChatCompletionRequest, tokenizer: Any, limits: ModelLimits) -> list[int]:
    messages = [{"role": m.role, "content": _message_text(m.content)} for m in req.messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=req.add_generation_prompt)
    except Exception as exc:  # template errors are the caller's message shape (e.g. unsupported role order)
        raise APIError(400, f"the model's chat template rejected the messages: {exc}", param="messages") from exc
    # The template already wrote the special tokens as text.
    ids = tokenizer.encode(text, add_special_tokens=False)
    _check_prompt(ids, limits, "messages")
    return ids


def sampling_params(req: CompletionRequest | ChatCompletionRequest, prompt_len: int,
                    limits: ModelLimits) -> SamplingParams:
    if req.n > limits.max_num_seqs:
        raise APIError(400, f"n ({req.n}) is more than this worker runs at once (batching.max_num_seqs="
                            f"{limits.max_num_seqs}); ask for at most {limits.max_num_seqs}", param="n")
    room = limits.max_model_len - prompt_len
    requested = req.max_completion_tokens if isinstance(req, ChatCompletionRequest) else None
    requested = requested or req.max_tokens
    if requested is None:
        max_tokens = min(room, COMPLETION_DEFAULT_MAX_TOKENS) if isinstance(req, CompletionRequest) else room
    elif requested > room:
        raise APIError(400, f"max_tokens ({requested}) is too large: the prompt has {prompt_len} tokens and the "
                            f"context is {limits.max_model_len}; ask for at most {room}", param="max_tokens")
    else:
        max_tokens = requested
    return SamplingParams(
        n=req.n, temperature=req.temperature, top_p=req.top_p, top_k=max(req.top_k, 0), min_p=req.min_p,
        repetition_penalty=req.repetition_penalty, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, seed=req.seed, max_tokens=max_tokens,
        stop=_stops(req.stop), stop_token_ids=list(req.stop_token_ids or []), ignore_eos=req.ignore_eos,
        logprobs=_logprobs(req), skip_special_tokens=req.skip_special_tokens,
    )


def check_completion_options(req: CompletionRequest) -> None:
    if req.echo and req.logprobs is not None:
        raise APIError(400, "echo with logprobs needs prompt logprobs, which this server does not compute; "
                            "drop one of them", param="echo")


def _logprobs(req: CompletionRequest | ChatCompletionRequest) -> int | None:
    if isinstance(req, CompletionRequest):
        return req.logprobs
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    return [s for s in stops if s]  # an empty stop string would end every completion at once


def _message_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text))


def _check_prompt(ids: list[int], limits: ModelLimits, param: str) -> None:
    if not ids:
        raise APIError(400, "the prompt is empty (0 tokens); send at least one token", param=param)
    if len(ids) >= limits.max_model_len:
        raise APIError(400, f"the prompt has {len(ids)} tokens but the context is {limits.max_model_len}; shorten it "
                            f"to at most {limits.max_model_len - 1} tokens to leave room for output", param=param,
                       code="context_length_exceeded")
    bad = next((t for t in ids if not 0 <= t < limits.vocab_size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is outside the vocabulary (0..{limits.vocab_size - 1})", param=param)
