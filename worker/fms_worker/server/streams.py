"""Running several engine streams for one HTTP request: submit, merge, and notice a gone client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from fms_worker.engine.async_engine import AsyncEngine, Rejected, RequestStream
from fms_worker.engine.types import RequestOutput, SamplingParams
from fms_worker.server.errors import APIError
from fms_worker.server.state import rejection_error


async def submit_all(engine: AsyncEngine, base_id: str, prompts: list[list[int]],
                     params: list[SamplingParams]) -> list[RequestStream]:
    """Submit every prompt; on any refusal, abort the ones already in and raise the matching APIError."""
    streams: list[RequestStream] = []
    try:
        for i, (ids, p) in enumerate(zip(prompts, params)):
            streams.append(await engine.submit(f"{base_id}-{i}", ids, p))
    except BaseException as exc:
        for s in streams:
            await s.aclose()
        if isinstance(exc, Rejected):
            raise rejection_error(exc) from exc
        if isinstance(exc, ValueError):
            raise APIError(400, str(exc)) from exc
        raise
    return streams


async def merged(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, output) from all streams as they arrive; closing it aborts what is left."""
    if len(streams) == 1:
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, s: RequestStream) -> None:
        try:
            async for out in s:
                await queue.put((i, out))
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        for s in streams:
            await s.aclose()


async def final_outputs(request: Request, streams: list[RequestStream]) -> list[RequestOutput]:
    """The last output of each stream; aborts all if the client disconnects first (non-streaming)."""
    async def collect() -> list[RequestOutput]:
        last: list[RequestOutput | None] = [None] * len(streams)
        async with aclosing(merged(streams)) as outputs:
            async for i, out in outputs:
                last[i] = out
        if any(o is None for o in last):
            raise APIError(503, "the request was cut off (the worker is shutting down)", retry_after=1)
        return last  # type: ignore[return-value]

    return await _unless_disconnected(request, collect, streams)


async def _unless_disconnected(request: Request, work: Callable[[], Awaitable], streams: list[RequestStream]):
    work_task = asyncio.create_task(work())
    watch = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({work_task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done():
            return work_task.result()
        # Nobody will read this answer; the streams are aborted below, which is the point.
        raise APIError(400, "the client closed the connection before the response was ready")
    finally:
        watch.cancel()
        if not work_task.done():
            work_task.cancel()
        for s in streams:
            await s.aclose()


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class SSEResponse(StreamingResponse):
    """Server-sent events that abort generation when the client goes away.

    Starlette only notices a gone client on the next send; this watches the connection
    while we wait for tokens and always closes the body iterator, so the engine request
    is aborted (and its KV blocks freed) right away rather than at garbage collection.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                async def stream() -> None:
                    await self.stream_response(send)
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                tg.start_soon(watch)
        except OSError:
            pass  # the client left in the middle of a send
        finally:
            await self.body_iterator.aclose()
