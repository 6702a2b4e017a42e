"""OpenAI-compatible routes of the generate task: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import lru_cache

from fastapi import APIRouter, Request

from fms_worker.engine.async_engine import RequestStream
from fms_worker.server.errors import error_body
from fms_worker.server.params import (check_completion_options, check_model, chat_prompt, completion_prompts,
                                      sampling_params)
from fms_worker.server.protocol import ChatCompletionRequest, CompletionRequest
from fms_worker.server.responses import (Envelope, Usage, chat_choice, chat_delta_choice, completion_choice, sse)
from fms_worker.server.state import ServingState
from fms_worker.server.streams import SSEResponse, final_outputs, merged, submit_all

log = logging.getLogger(__name__)
router = APIRouter()


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def _decoder(tokenizer):
    @lru_cache(maxsize=65536)
    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id])

    return decode


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    state = _state(request)
    card = {"id": state.config.served_name, "object": "model", "created": int(time.time()), "owned_by": "fms",
            "root": state.config.model.path,
            "max_model_len": state.limits.max_model_len if state.limits else None}
    return {"object": "list", "data": [card]}


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request):
    state = _state(request)
    engine = state.ready_engine()
    limits, tokenizer = state.limits, state.engine.tokenizer
    check_model(body.model, limits)
    check_completion_options(body)
    prompts = completion_prompts(body, tokenizer, limits)
    params = [sampling_params(body, len(p), limits) for p in prompts]
    env = Envelope(f"cmpl-{uuid.uuid4().hex}", limits.served_name, "text_completion")
    streams = await submit_all(engine, env.id, prompts, params)
    decode = _decoder(tokenizer)
    echoes = [tokenizer.decode(p) if body.echo else "" for p in prompts]
    n = body.n
    if body.stream:
        return SSEResponse(_guarded(_completion_events(env, streams, decode, echoes, n, _include_usage(body))))
    outs = await final_outputs(request, streams)
    usage, choices = Usage(), []
    for i, out in enumerate(outs):
        usage.add(out)
        for o in out.outputs:
            choices.append(completion_choice(i * n + o.index, o, echoes[i] + o.text, decode, delta=False))
    return env.body(sorted(choices, key=lambda c: c["index"]), usage)


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    state = _state(request)
    engine = state.ready_engine()
    limits, tokenizer = state.limits, state.engine.tokenizer
    check_model(body.model, limits)
    prompt = chat_prompt(body, tokenizer, limits)
    params = sampling_params(body, len(prompt), limits)
    env = Envelope(f"chatcmpl-{uuid.uuid4().hex}", limits.served_name, "chat.completion")
    streams = await submit_all(engine, env.id, [prompt], [params])
    decode = _decoder(tokenizer)
    top_n = body.top_logprobs or 0
    if body.stream:
        env.object = "chat.completion.chunk"
        return SSEResponse(_guarded(_chat_events(env, streams, decode, top_n, body.n, _include_usage(body))))
    (out,) = await final_outputs(request, streams)
    usage = Usage()
    usage.add(out)
    return env.body([chat_choice(o.index, o, decode, top_n) for o in out.outputs], usage)


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Headers are already sent once streaming starts: an engine failure becomes an error event."""
    try:
        async for chunk in events:
            yield chunk
    except Exception as exc:
        log.exception("stream failed")
        yield sse(error_body(500, f"generation failed: {exc}"))
        yield sse("[DONE]")
    finally:
        await events.aclose()


def _include_usage(body: CompletionRequest | ChatCompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _completion_events(env: Envelope, streams: list[RequestStream], decode, echoes: list[str], n: int,
                             include_usage: bool) -> AsyncIterator[bytes]:
    usage, echoed, finished = Usage(), set(), set()
    async with aclosing(merged(streams)) as outputs:
        async for i, out in outputs:
            choices = []
            for o in out.outputs:
                if not (o.new_token_ids or o.new_text or o.finished):
                    continue
                index = i * n + o.index
                prefix = echoes[i] if index not in echoed else ""
                echoed.add(index)
                choices.append(completion_choice(index, o, prefix + o.new_text, decode, delta=True))
            if choices:
                yield sse(env.body(choices))
            if out.finished:
                usage.add(out)
                finished.update(i * n + o.index for o in out.outputs)
    cut = [i for i in range(len(streams) * n) if i not in finished]
    if cut:  # the server cut these off (drain timeout): say so instead of ending silently
        yield sse(env.body([{"index": i, "text": "", "logprobs": None, "finish_reason": "abort"} for i in cut]))
    if include_usage:
        yield sse(env.body([], usage))
    yield sse("[DONE]")


async def _chat_events(env: Envelope, streams: list[RequestStream], decode, top_n: int, n: int,
                       include_usage: bool) -> AsyncIterator[bytes]:
    usage, started, finished = Usage(), set(), set()
    async with aclosing(merged(streams)) as outputs:
        async for _, out in outputs:
            choices = []
            for o in out.outputs:
                if not (o.new_token_ids or o.new_text or o.finished):
                    continue
                choices.append(chat_delta_choice(o.index, o, decode, top_n, first=o.index not in started))
                started.add(o.index)
            if choices:
                yield sse(env.body(choices))
            if out.finished:
                usage.add(out)
                finished.update(o.index for o in out.outputs)
    cut = [i for i in range(n) if i not in finished]
    if cut:
        yield sse(env.body([{"index": i, "delta": {}, "logprobs": None, "finish_reason": "abort"} for i in cut]))
    if include_usage:
        yield sse(env.body([], usage))
    yield sse("[DONE]")
