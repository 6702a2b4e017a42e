"""The asyncio bridge: one background thread drives the (synchronous) engine.

The engine is not thread-safe, so only the engine thread touches it. The event
loop hands work over through an inbox (add / abort commands) and gets outputs
back through per-request asyncio queues fed with `loop.call_soon_threadsafe`.
The thread steps whenever the engine has unfinished work and otherwise sleeps
on an event, so an idle worker costs no CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from fms_worker.engine.types import CompletionOutput, EngineStats, RequestOutput, SamplingParams

log = logging.getLogger(__name__)

Outcome = Literal["success", "error", "abort", "rejected"]


class Engine(Protocol):
    """What the bridge needs from LLMEngine (a fake implements it in unit tests)."""

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    arrival: float | None = None) -> None: ...
    def abort_request(self, request_id: str) -> None: ...
    def step(self) -> list[RequestOutput]: ...
    def has_unfinished(self) -> bool: ...
    def stats(self) -> EngineStats: ...


class Observer(Protocol):
    """Receives plain data about steps and finished requests (the metrics exporter)."""

    def on_step(self, stats: EngineStats) -> None: ...
    def on_request_done(self, outcome: Outcome, last: RequestOutput | None) -> None: ...


class Rejected(Exception):
    """Admission refused: the waiting queue is full (429) or the worker is draining (503)."""

    def __init__(self, reason: Literal["queue_full", "draining", "stopped"], message: str):
        super().__init__(message)
        self.reason = reason


class _NullObserver:
    def on_step(self, stats: EngineStats) -> None:
        pass

    def on_request_done(self, outcome: Outcome, last: RequestOutput | None) -> None:
        pass


@dataclass
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float
    accepted: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


_END = object()  # sentinel pushed after a request's final output
_CUT = object()  # sentinel: the server cut the request off (drain timeout, shutdown)


def _merge(earlier: RequestOutput, later: RequestOutput) -> RequestOutput:
    """`later` with the deltas of both (cumulative fields are already the later ones)."""
    outputs = [CompletionOutput(b.index, b.token_ids, b.text, a.new_token_ids + b.new_token_ids, a.new_text + b.new_text,
                                b.logprobs, b.finish_reason, b.stop_reason) for a, b in zip(earlier.outputs, later.outputs)]
    return RequestOutput(later.request_id, later.prompt_token_ids, outputs, later.finished, later.times,
                         later.num_cached_prompt_tokens)


class RequestStream:
    """Outputs of one request, in order; consumed on the event loop."""

    def __init__(self, engine: AsyncEngine, request_id: str):
        self.engine = engine
        self.request_id = request_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.last: RequestOutput | None = None
        self.closed = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.closed:
            raise StopAsyncIteration
        item = await self.queue.get()
        while isinstance(item, RequestOutput) and not self.queue.empty() and isinstance(self.queue._queue[0],
                                                                                          RequestOutput):
            # The consumer fell behind the engine: hand over one output carrying every delta since,
            # so a slow event loop sends fewer, larger chunks instead of falling further behind.
            item = _merge(item, self.queue.get_nowait())
        if item is _END:
            aborted = any(o.finish_reason == "abort" for o in self.last.outputs)
            self._done("abort" if aborted else "success", abort=False)
            raise StopAsyncIteration
        if item is _CUT:
            self._done("abort", abort=False)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done("error", abort=False)
            raise item
        self.last = item
        return item

    async def aclose(self) -> None:
        """Abort the request if it is still running (client went away); no-op once finished."""
        self._done("abort", abort=True)

    def _done(self, outcome: Outcome, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if abort:
            self.engine.abort(self.request_id)
        self.engine._forget(self.request_id)
        self.engine.observer.on_request_done(outcome, self.last)


class AsyncEngine:
    def __init__(self, engine: Engine, *, max_waiting: int, observer: Observer | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None):
        self.engine = engine
        self.on_fatal = on_fatal  # called on the event loop if the engine loop dies
        self.max_waiting = max_waiting
        self.observer = observer or _NullObserver()
        self.draining = False
        self._lock = threading.Lock()  # guards _inbox, _aborts, _stats
        self._inbox: list[_Add] = []
        self._aborts: list[str] = []
        self._stats = replace(engine.stats())
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, RequestStream] = {}  # touched only on the event loop
        self._idle = asyncio.Event()
        self._idle.set()
        self.fatal_error: BaseException | None = None
        self.step_started: float | None = None  # time.monotonic() when the step in progress began

    def stalled_seconds(self, now: float | None = None) -> float:
        """How long the engine has been inside one step (0 between steps)."""
        started = self.step_started
        return 0.0 if started is None else (time.monotonic() if now is None else now) - started

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="fms-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Abort everything still running and join the engine thread."""
        self._cut_all()
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None

    def begin_drain(self) -> None:
        self.draining = True

    async def drain(self, timeout: float) -> int:
        """Stop admitting, wait up to `timeout` s for in-flight requests; abort the rest. Returns #aborted."""
        self.begin_drain()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return 0
        except TimeoutError:
            return self._cut_all()

    def _cut_all(self) -> int:
        """Abort every in-flight request and end its stream (the engine may not report aborts)."""
        for request_id, stream in self._streams.items():
            self.abort(request_id)
            stream.queue.put_nowait(_CUT)
        return len(self._streams)

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def stats(self) -> EngineStats:
        with self._lock:
            return self._stats

    # ---- requests --------------------------------------------------------------------------

    async def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        """Admit a request and wait until the engine has accepted it.

        Raises Rejected (queue full / draining) or the engine's ValueError (too long, bad
        params) here, before any output, so the caller can still answer with a status code.
        The caller must `aclose()` the stream (or exhaust it); closing early aborts the request.
        """
        add = self._admit(request_id, prompt_ids, params)
        stream = RequestStream(self, request_id)
        self._streams[request_id] = stream
        self._idle.clear()
        try:
            await asyncio.wrap_future(add.accepted)
        except ValueError:
            stream._done("error", abort=False)
            raise
        except BaseException:
            stream._done("abort", abort=True)  # cancelled while queued: the abort runs after the add
            raise
        return stream

    async def generate(self, request_id: str, prompt_ids: list[int],
                       params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs as the engine produces them (deltas plus cumulative text)."""
        stream = await self.submit(request_id, prompt_ids, params)
        try:
            async for out in stream:
                yield out
        finally:
            await stream.aclose()

    def _forget(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        if not self._streams:
            self._idle.set()

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.append(request_id)
        self._wake.set()

    def _admit(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> _Add:
        if self._stop or self.fatal_error is not None:
            self._reject("stopped", "the engine is not running")
        if self.draining:
            self._reject("draining", "the worker is shutting down; retry on another replica")
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        add = _Add(request_id, prompt_ids, params, time.monotonic())
        with self._lock:
            waiting = len(self._inbox) + self._stats.num_waiting
            if waiting >= self.max_waiting:
                full = True
            else:
                full = False
                self._inbox.append(add)
        if full:
            self._reject("queue_full", f"the waiting queue is full ({self.max_waiting} requests); retry later")
        self._wake.set()
        return add

    def _reject(self, reason, message: str):
        self.observer.on_request_done("rejected", None)
        raise Rejected(reason, message)

    # ---- engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._apply_commands()  # also after stop(): its aborts free the KV blocks
                if self._stop:
                    break
                if self.engine.has_unfinished():
                    self.step_started = time.monotonic()
                    outputs = self.engine.step()
                    self.step_started = None
                    stats = replace(self.engine.stats())  # a copy: the engine reuses its object
                    with self._lock:
                        self._stats = stats
                    self.observer.on_step(stats)
                    if outputs:
                        self._loop.call_soon_threadsafe(self._deliver, outputs)
                else:
                    self._wake.wait()
                    self._wake.clear()
        except BaseException as exc:  # the engine is broken: fail every stream, refuse new work
            log.exception("engine loop died")
            self.fatal_error = exc
            self._loop.call_soon_threadsafe(self._fail_all, exc)

    def _apply_commands(self) -> None:
        with self._lock:
            adds, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
            for add in adds:
                if not add.accepted.set_running_or_notify_cancel():
                    continue  # the caller went away before the engine saw it
                try:
                    self.engine.add_request(add.request_id, add.prompt_ids, add.params, arrival=add.arrival)
                except Exception as exc:  # the engine's refusal goes back to the caller (400)
                    # A refusal raised after the engine registered the id would leave it "unfinished"
                    # forever (and this loop spinning); aborting an unknown id is a no-op. Ids are
                    # unique per bridge (checked in _admit), so this cannot hit another request.
                    self.engine.abort_request(add.request_id)
                    add.accepted.set_exception(exc)
                else:
                    add.accepted.set_result(None)
            for request_id in aborts:
                self.engine.abort_request(request_id)
            if adds or aborts:
                self._stats = replace(self.engine.stats())

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue  # its consumer went away; the abort is already queued
            stream.queue.put_nowait(out)
            if out.finished:
                stream.queue.put_nowait(_END)

    def _fail_all(self, exc: BaseException) -> None:
        for stream in self._streams.values():
            stream.queue.put_nowait(RuntimeError(f"engine failed: {exc!r}"))
        if self.on_fatal is not None:
            self.on_fatal(exc)
