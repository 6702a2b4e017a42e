"""DynamicBatcher with a fake model: batching under concurrency, per-item results, failures, withdrawal."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from fms_worker.encoders.batch_policy import BatchPolicy
from fms_worker.encoders.batcher import DynamicBatcher
from fms_worker.encoders.types import EncoderBusy


class Recorder:
    def __init__(self):
        self.batches = []

    def on_batch(self, record):
        self.batches.append(record)


def echo(payloads):
    assert threading.current_thread() is not threading.main_thread()  # forward runs off the event loop
    return np.array([[p * 10.0] for p in payloads]), 0


async def test_concurrent_submits_form_one_batch_and_each_gets_its_own_row():
    rec = Recorder()
    b = DynamicBatcher(echo, BatchPolicy(max_batch_size=16, max_queue_delay_s=5.0), max_waiting=100, observer=rec)
    rows = await asyncio.gather(*(b.submit(i, 1) for i in range(16)))
    await b.close()
    assert [float(r[0]) for r in rows] == [i * 10.0 for i in range(16)]
    assert [r.size for r in rec.batches] == [16]  # full batch dispatched long before the 5 s delay


async def test_delay_expiry_dispatches_partial_batch():
    rec = Recorder()
    b = DynamicBatcher(echo, BatchPolicy(max_batch_size=16, max_queue_delay_s=0.02), max_waiting=100, observer=rec)
    rows = await asyncio.wait_for(asyncio.gather(b.submit(1, 1), b.submit(2, 1)), 5)
    await b.close()
    assert [float(r[0]) for r in rows] == [10.0, 20.0]
    assert [r.size for r in rec.batches] == [2] and min(rec.batches[0].queue_delays_s) >= 0.015


async def test_model_failure_reaches_every_request_and_batcher_survives():
    calls = []

    def flaky(payloads):
        calls.append(len(payloads))
        if len(calls) == 1:
            raise RuntimeError("CUDA error: boom")
        return echo(payloads)

    b = DynamicBatcher(flaky, BatchPolicy(max_batch_size=2, max_queue_delay_s=0.0), max_waiting=100)
    first = await asyncio.gather(b.submit(1, 1), b.submit(2, 1), return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in first)
    assert float((await b.submit(3, 1))[0]) == 30.0
    await b.close()


async def test_queue_bound_and_withdrawn_items():
    gate = threading.Event()

    def slow(payloads):
        gate.wait(5)
        return echo(payloads)

    rec = Recorder()
    b = DynamicBatcher(slow, BatchPolicy(max_batch_size=1, max_queue_delay_s=0.0), max_waiting=2, observer=rec)
    running = b.submit(0, 1)
    await asyncio.sleep(0.05)  # item 0 is in the forward; the queue is empty again
    withdrawn, kept = b.submit(1, 1), b.submit(2, 1)
    with pytest.raises(EncoderBusy, match="max_waiting"):
        b.submit(3, 1)
    withdrawn.cancel()
    gate.set()
    assert float((await kept)[0]) == 20.0 and float((await running)[0]) == 0.0
    await b.close()
    assert [r.size for r in rec.batches] == [1, 1]  # the withdrawn item never ran
