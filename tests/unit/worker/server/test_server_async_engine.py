"""AsyncEngine against the fake engine: threading, admission, abort, drain."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fms_worker.engine.async_engine import AsyncEngine, Rejected
from fms_worker.engine.types import SamplingParams


class Recorder:
    def __init__(self):
        self.outcomes: list[str] = []
        self.steps = 0

    def on_step(self, stats):
        self.steps += 1

    def on_request_done(self, outcome, last):
        self.outcomes.append(outcome)


async def _run(ae: AsyncEngine, rid: str, max_tokens: int = 5) -> list:
    return [out async for out in ae.generate(rid, [1, 2, 3], SamplingParams(max_tokens=max_tokens))]


async def test_generate_streams_deltas_from_one_engine_thread(fake_engine):
    rec = Recorder()
    ae = AsyncEngine(fake_engine, max_waiting=8, observer=rec)
    ae.start()
    try:
        outs = await _run(ae, "r1", max_tokens=5)
    finally:
        await ae.stop()
    assert "".join(o.outputs[0].new_text for o in outs) == "abcde"  # one delta per step, or merged (below)
    assert sum(len(o.outputs[0].new_token_ids) for o in outs) == 5
    assert outs[-1].finished and outs[-1].outputs[0].text == "abcde"
    assert len(fake_engine.thread_ids) == 1 and threading.get_ident() not in fake_engine.thread_ids
    assert rec.outcomes == ["success"] and rec.steps == 5


async def test_a_stream_that_fell_behind_gets_its_deltas_merged():
    from fms_worker.engine.async_engine import _END, RequestStream
    from fms_worker.engine.types import CompletionOutput, RequestOutput, RequestTimes

    def out(step: int, finished: bool = False) -> RequestOutput:
        text = "abc"[: step + 1]
        comp = CompletionOutput(0, [10, 11, 12][: step + 1], text, [10 + step], text[-1],
                                finish_reason="length" if finished else None)
        return RequestOutput("r", [1], [comp], finished, RequestTimes(0.0))

    class Owner:  # the stream only reports back to its engine when it ends
        observer = Recorder()

        def _forget(self, request_id):
            pass

    stream = RequestStream(Owner(), "r")
    for step in range(3):  # three steps land before the consumer looks
        stream.queue.put_nowait(out(step, finished=step == 2))
    stream.queue.put_nowait(_END)
    got = [o async for o in stream]
    assert len(got) == 1
    (merged,) = got[0].outputs
    assert merged.new_token_ids == [10, 11, 12] and merged.new_text == "abc" and merged.text == "abc"
    assert merged.finish_reason == "length" and got[0].finished
    assert Owner.observer.outcomes == ["success"]


async def test_many_concurrent_requests_finish_and_free_blocks(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=64)
    ae.start()
    try:
        results = await asyncio.gather(*(_run(ae, f"r{i}", max_tokens=3 + i % 4) for i in range(20)))
        await asyncio.sleep(0.05)
        stats = ae.stats()
    finally:
        await ae.stop()
    assert [len(r[-1].outputs[0].token_ids) for r in results] == [3 + i % 4 for i in range(20)]
    assert stats.num_free_kv_blocks == stats.num_kv_blocks and stats.num_running == 0


async def test_queue_full_is_rejected(fake_engine):
    fake_engine.max_num_seqs = 1
    rec = Recorder()
    ae = AsyncEngine(fake_engine, max_waiting=1, observer=rec)
    ae.start()
    try:
        a = await ae.submit("a", [1], SamplingParams(max_tokens=1000))
        b = await ae.submit("b", [1], SamplingParams(max_tokens=1000))
        with pytest.raises(Rejected) as info:
            await ae.submit("c", [1], SamplingParams(max_tokens=5))
        assert info.value.reason == "queue_full"
        await a.aclose()
        await b.aclose()
    finally:
        await ae.stop()
    assert rec.outcomes.count("rejected") == 1 and rec.outcomes.count("abort") == 2


async def test_closing_a_stream_aborts_the_request(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        gen = ae.generate("r", [1, 2], SamplingParams(max_tokens=10_000))
        await anext(gen)
        await gen.aclose()
        for _ in range(100):
            if not fake_engine.requests:
                break
            await asyncio.sleep(0.01)
        assert not fake_engine.requests
        assert ae.num_in_flight == 0
    finally:
        await ae.stop()


async def test_cancelled_task_aborts_the_request(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        task = asyncio.create_task(_run(ae, "r", max_tokens=10_000))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if not fake_engine.requests:
                break
            await asyncio.sleep(0.01)
        assert not fake_engine.requests
    finally:
        await ae.stop()


async def test_engine_refusal_raises_value_error(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        with pytest.raises(ValueError, match="exceeds"):
            await ae.submit("r", [1] * 10, SamplingParams(max_tokens=fake_engine.max_model_len))
        assert ae.num_in_flight == 0
    finally:
        await ae.stop()


async def test_drain_finishes_in_flight_and_refuses_new(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        running = asyncio.create_task(_run(ae, "r", max_tokens=20))
        await asyncio.sleep(0.01)
        drained = asyncio.create_task(ae.drain(timeout=10))
        await asyncio.sleep(0)
        with pytest.raises(Rejected) as info:
            await ae.submit("late", [1], SamplingParams())
        assert info.value.reason == "draining"
        assert await drained == 0
        outs = await running
        assert outs[-1].outputs[0].finish_reason == "length"
    finally:
        await ae.stop()


async def test_drain_timeout_cuts_off_the_rest(fake_engine):
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        running = asyncio.create_task(_run(ae, "r", max_tokens=100_000))
        await asyncio.sleep(0.02)
        assert await ae.drain(timeout=0.05) == 1
        outs = await asyncio.wait_for(running, 5)
        assert not outs[-1].finished
        for _ in range(100):
            if not fake_engine.requests:
                break
            await asyncio.sleep(0.01)
        assert not fake_engine.requests
    finally:
        await ae.stop()


async def test_engine_crash_fails_streams_and_reports(fake_engine):
    died = []

    def boom():
        raise RuntimeError("device lost")

    ae = AsyncEngine(fake_engine, max_waiting=8, on_fatal=died.append)
    ae.start()
    try:
        stream = await ae.submit("r", [1], SamplingParams(max_tokens=10))
        fake_engine.step = boom
        with pytest.raises(RuntimeError, match="device lost"):
            async for _ in stream:
                pass
        assert len(died) == 1 and ae.fatal_error is not None
        with pytest.raises(Rejected):
            await ae.submit("s", [1], SamplingParams())
    finally:
        await ae.stop()


async def test_refused_add_leaves_no_unfinished_work(fake_engine):
    """An engine that registers the id before refusing must not keep the loop spinning."""
    real_add = fake_engine.add_request

    def half_add(request_id, prompt_token_ids, params, arrival=None):
        real_add(request_id, prompt_token_ids, params, arrival)
        raise ValueError("refused after registering")

    fake_engine.add_request = half_add
    ae = AsyncEngine(fake_engine, max_waiting=8)
    ae.start()
    try:
        with pytest.raises(ValueError, match="refused"):
            await ae.submit("r", [1], SamplingParams(max_tokens=10_000))
        await asyncio.sleep(0.05)
        assert not fake_engine.has_unfinished()
    finally:
        await ae.stop()
