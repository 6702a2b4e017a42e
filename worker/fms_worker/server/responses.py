"""RequestOutput -> OpenAI response bodies and stream chunks (pure; dicts ready for JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fms_worker.engine.types import CompletionOutput, RequestOutput

Decode = Callable[[int], str]  # token id -> its text


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, out: RequestOutput) -> None:
        self.prompt_tokens += len(out.prompt_token_ids)
        self.completion_tokens += sum(len(o.token_ids) for o in out.outputs)

    def body(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class Envelope:
    """What every body of one response shares."""

    id: str
    model: str
    object: str
    created: int = field(default_factory=lambda: int(time.time()))

    def body(self, choices: list[dict], usage: Usage | None = None) -> dict:
        body = {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage.body()
        return body


def sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


# ---- completions ---------------------------------------------------------------------------

def completion_choice(index: int, o: CompletionOutput, text: str, decode: Decode, *, delta: bool) -> dict:
    # A final body without a finish reason means the server cut the request off (drain timeout).
    reason = o.finish_reason if delta else o.finish_reason or "abort"
    return {"index": index, "text": text, "logprobs": completion_logprobs(o, decode, delta=delta),
            "finish_reason": reason}


def completion_logprobs(o: CompletionOutput, decode: Decode, *, delta: bool) -> dict | None:
    if o.logprobs is None:
        return None
    ids, lps = _token_slice(o, delta)
    tokens = [decode(t) for t in ids]
    offsets, pos = [], len(o.text) - sum(len(t) for t in tokens) if delta else 0
    for tok in tokens:
        offsets.append(max(pos, 0))
        pos += len(tok)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.get(t) for t, lp in zip(ids, lps)],
        "top_logprobs": [{decode(k): v for k, v in lp.items()} for lp in lps],
        "text_offset": offsets,
    }


# ---- chat ----------------------------------------------------------------------------------

def chat_choice(index: int, o: CompletionOutput, decode: Decode, top_n: int) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": o.text},
            "logprobs": chat_logprobs(o, decode, top_n, delta=False), "finish_reason": o.finish_reason or "abort"}


def chat_delta_choice(index: int, o: CompletionOutput, decode: Decode, top_n: int, *, first: bool) -> dict:
    delta = {"role": "assistant", "content": o.new_text} if first else {"content": o.new_text}
    return {"index": index, "delta": delta, "logprobs": chat_logprobs(o, decode, top_n, delta=True),
            "finish_reason": o.finish_reason}


def chat_logprobs(o: CompletionOutput, decode: Decode, top_n: int, *, delta: bool) -> dict | None:
    if o.logprobs is None:
        return None
    ids, lps = _token_slice(o, delta)
    content = []
    for t, lp in zip(ids, lps):
        tok = decode(t)
        best = sorted(lp.items(), key=lambda kv: kv[1], reverse=True)[:top_n]
        content.append({"token": tok, "logprob": lp.get(t), "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": decode(k), "logprob": v, "bytes": list(decode(k).encode())}
                                         for k, v in best]})
    return {"content": content}


def _token_slice(o: CompletionOutput, delta: bool) -> tuple[list[int], list[dict[int, float]]]:
    if not delta:
        return o.token_ids, o.logprobs or []
    k = len(o.new_token_ids)
    return o.new_token_ids, (o.logprobs or [])[len(o.logprobs or []) - k:] if k else []
