"""A hung engine step fails the worker (so Kubernetes restarts it) instead of leaving it stuck but alive."""

from __future__ import annotations

import asyncio
import threading

from conftest import FakeEngine
from fms_worker.config import WorkerConfig
from fms_worker.engine.async_engine import AsyncEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.metrics.exporter import ServingMetrics
from fms_worker.server.state import ServingState


class HangingEngine(FakeEngine):
    """Steps normally until `hang` is set; then a step blocks (as a wait on a hung GPU would) until released."""

    def __init__(self):
        super().__init__()
        self.hang = threading.Event()
        self.release = threading.Event()

    def step(self):
        if self.hang.is_set():
            self.release.wait(10)
        return super().step()


def _config(tmp_path, timeout: float) -> WorkerConfig:
    return WorkerConfig(model={"path": str(tmp_path), "served_name": "fake"}, runtime={"step_timeout_s": timeout})


async def _serving(tmp_path, engine, timeout: float) -> tuple[ServingState, list[str]]:
    state = ServingState(_config(tmp_path, timeout), ServingMetrics())
    fatal: list[str] = []
    state.on_fatal = fatal.append
    await state.load(None, engine=engine)  # the warm-up request steps normally
    return state, fatal


async def test_a_step_that_never_returns_fails_the_worker(tmp_path):
    engine = HangingEngine()
    state, fatal = await _serving(tmp_path, engine, timeout=0.3)
    try:
        assert state.phase == "ready"
        engine.hang.set()
        stream = await state.async_engine.submit("r1", [1, 2], SamplingParams(max_tokens=3))
        for _ in range(100):
            if fatal:
                break
            await asyncio.sleep(0.05)
        assert fatal and "no progress" in fatal[0] and "step_timeout_s" in fatal[0]
        assert state.phase == "failed"
        assert state.readiness()[0] == 503
        await stream.aclose()
    finally:
        engine.release.set()
        await state.stop()


async def test_slow_but_moving_steps_and_idle_time_do_not_trip_it(tmp_path):
    engine = FakeEngine(step_seconds=0.05)  # each step well under the timeout; idle gaps longer than it
    state, fatal = await _serving(tmp_path, engine, timeout=0.2)
    try:
        for rid in ("a", "b"):
            outs = [o async for o in state.async_engine.generate(rid, [1], SamplingParams(max_tokens=8))]
            assert outs[-1].finished
            await asyncio.sleep(0.5)  # idle: no step in progress
        assert not fatal and state.phase == "ready"
    finally:
        await state.stop()


def test_stalled_seconds_counts_only_the_step_in_progress():
    ae = AsyncEngine(FakeEngine(), max_waiting=1)
    assert ae.stalled_seconds() == 0.0
    ae.step_started = 100.0
    assert ae.stalled_seconds(now=103.5) == 3.5
