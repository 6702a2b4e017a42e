"""Shutting a tensor-parallel group down: every rank drops its CUDA graphs before the process group is
destroyed, since NCCL cannot destroy a communicator whose kernels live graphs hold (the GPU TP test hung
in destroy_process_group on H200 until this order; pytorch/pytorch#115388)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from fms_worker.engine import distributed
from fms_worker.engine.distributed import STOP, ParallelRunner, serve_commands


class _Runner:
    vocab_size = 10

    def __init__(self, events):
        self.events = events

    def release_graphs(self):
        self.events.append("release")

    def ping(self):
        self.events.append("ping")


def test_rank0_close_releases_graphs_first(monkeypatch):
    events = []
    monkeypatch.setattr(distributed.launch, "broadcast_object", lambda obj, groups, src=0: events.append(obj[0]))
    monkeypatch.setattr(distributed.launch, "shutdown_groups", lambda: events.append("shutdown"))
    monkeypatch.setattr(distributed.launch, "stop_followers", lambda followers: events.append("stop"))
    runner = ParallelRunner(_Runner(events), SimpleNamespace(info=SimpleNamespace(pp=1), channel=None), [])
    runner.close()
    runner.close()  # once only
    assert events == [STOP, "release", "shutdown", "stop"]


def test_follower_releases_graphs_when_told_to_stop(monkeypatch):
    events = []
    calls = iter([("ping", ()), (STOP, ())])
    monkeypatch.setattr(distributed.launch, "broadcast_object", lambda obj, groups, src=0: next(calls))
    monkeypatch.setattr(distributed, "_finish", lambda method, result, groups: result)
    try:
        serve_commands(_Runner(events), SimpleNamespace(info=SimpleNamespace(pp=1), channel=None))
    finally:
        gc.unfreeze()  # serve_commands freezes the collector's objects, as a follower process should
    assert events == ["ping", "release"]


def test_a_destroy_that_never_returns_is_abandoned(monkeypatch, caplog):
    """If NCCL blocks in destroy anyway, the worker logs it and goes on to exit instead of hanging."""
    import threading

    from fms_worker.parallel import launch

    release = threading.Event()
    monkeypatch.setattr(launch.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(launch.dist, "destroy_process_group", lambda: release.wait(30))
    try:
        with caplog.at_level("ERROR", logger=launch.__name__):
            assert launch.shutdown_groups(timeout_s=0.2) is False
        assert "did not finish" in caplog.text
    finally:
        release.set()  # let the abandoned thread end
    monkeypatch.setattr(launch.dist, "destroy_process_group", lambda: None)
    assert launch.shutdown_groups(timeout_s=5) is True
