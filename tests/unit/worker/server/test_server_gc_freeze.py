"""The serving process moves what start-up made out of the garbage collector's sight once the model is in."""

from __future__ import annotations

import gc

import pytest

from conftest import FakeEngine
from fms_worker.config import WorkerConfig
from fms_worker.metrics.exporter import ServingMetrics
from fms_worker.server.state import ServingState


@pytest.mark.parametrize("serving_process", [True, False])
async def test_objects_alive_after_load_are_frozen_only_in_the_serving_process(tmp_path, monkeypatch,
                                                                              serving_process):
    state = ServingState(WorkerConfig(model={"path": str(tmp_path), "served_name": "fake"}), ServingMetrics())
    engine = FakeEngine()
    calls: list[tuple[str, bool]] = []  # (call, whether the warmed-up engine was already the state's)
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(("collect", state.engine is engine)) or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(("freeze", state.engine is engine)))  # the test
    state.freeze_after_load = serving_process                                 # interpreter itself stays unfrozen
    await state.load(None, engine=engine)
    try:
        assert state.phase == "ready"
        assert calls == ([("collect", True), ("freeze", True)] if serving_process else [])
    finally:
        await state.stop()
