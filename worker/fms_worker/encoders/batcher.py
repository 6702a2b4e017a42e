"""One asyncio task per model that forms batches (batch_policy) and runs them on a dedicated worker thread.

The event loop only queues items and resolves futures; the forward pass runs
in a single-thread executor, so requests keep arriving (and the next batch
keeps filling) while the current one computes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fms_worker.encoders.batch_policy import BatchPolicy, Waiting, plan_batch
from fms_worker.encoders.types import BatchRecord, EncoderBusy, EncoderObserver, NullObserver

RunBatch = Callable[[list], tuple[np.ndarray, int]]


@dataclass(eq=False)
class _Item:
    payload: object
    length: int
    enqueued_at: float
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, run_batch: RunBatch, policy: BatchPolicy, *, max_waiting: int,
                 observer: EncoderObserver | None = None, clock: Callable[[], float] = time.monotonic):
        self._run_batch = run_batch
        self.policy = policy
        self.max_waiting = max_waiting
        self.observer = observer or NullObserver()
        self._clock = clock
        self._waiting: list[_Item] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fms-encoder")
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def submit(self, payload: object, length: int) -> asyncio.Future:
        """Queue one input; the future resolves to its output row. Cancel the future to withdraw it."""
        self._ensure_started()
        if len(self._waiting) >= self.max_waiting:
            raise EncoderBusy(f"{len(self._waiting)} inputs already wait for this model (batching.max_waiting); "
                              "retry shortly")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Item(payload, length, self._clock(), future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for item in self._waiting:
            item.future.cancel()
        self._waiting.clear()
        self._executor.shutdown(wait=True)

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="fms-encoder-batcher")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            self._waiting = [it for it in self._waiting if not it.future.done()]  # timed out or withdrawn
            plan = plan_batch([Waiting(it.length, it.enqueued_at) for it in self._waiting], self._clock(), self.policy)
            if not plan.take:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), plan.wait_s)
                except TimeoutError:
                    pass
                continue
            chosen = set(plan.take)
            batch = [it for i, it in enumerate(self._waiting) if i in chosen]
            self._waiting = [it for i, it in enumerate(self._waiting) if i not in chosen]
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        start = self._clock()
        try:
            outputs, padded_length = await loop.run_in_executor(self._executor, self._run_batch,
                                                                [it.payload for it in batch])
        except Exception as e:  # the model failed: every request in the batch hears about it, the loop goes on
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        self.observer.on_batch(BatchRecord(size=len(batch), queue_delays_s=tuple(start - it.enqueued_at for it in batch),
                                           forward_s=self._clock() - start, padded_length=padded_length))
        for it, row in zip(batch, outputs):
            if not it.future.done():
                it.future.set_result(row)
