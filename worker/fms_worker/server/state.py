"""What the routes share: config, metrics, and the engine once it is loaded and warm."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any, Literal

from fms_worker.config import WorkerConfig
from fms_worker.engine.async_engine import AsyncEngine, Rejected
from fms_worker.engine.types import SamplingParams
from fms_worker.metrics import ServingMetrics
from fms_worker.server.errors import APIError
from fms_worker.server.params import ModelLimits

log = logging.getLogger(__name__)

Phase = Literal["loading", "ready", "draining", "failed"]
RETRY_AFTER_S = 1  # seconds a 429 asks the client to wait; a full queue drains in about that on a GPU


def default_engine_factory(config: WorkerConfig) -> Any:
    from fms_worker.engine.llm_engine import LLMEngine  # imports torch: keep it off the module path

    return LLMEngine(config)


def warm_up(engine: Any) -> None:
    """Run one tiny request through the engine so the first client doesn't pay for lazy init and compiles."""
    ids = list(engine.tokenizer.encode("Warm up.")) or [0]
    engine.add_request("fms-warmup", ids, SamplingParams(max_tokens=2, temperature=0.0))
    while engine.has_unfinished():
        engine.step()


class ServingState:
    def __init__(self, config: WorkerConfig, metrics: ServingMetrics):
        self.config = config
        self.metrics = metrics
        self.phase: Phase = "loading"
        self.error: str | None = None
        self.engine: Any = None  # LLMEngine
        self.async_engine: AsyncEngine | None = None
        self.limits: ModelLimits | None = None
        self.on_fatal: Callable[[str], None] = lambda message: None  # the runner exits the process
        self._watchdog: asyncio.Task | None = None
        # The serving process sets it (runner.serve); apps in a shared interpreter (tests) leave it off.
        self.freeze_after_load = False

    async def load(self, factory: Callable[[WorkerConfig], Any] | None, engine: Any = None) -> None:
        try:
            if engine is None:
                engine = await asyncio.to_thread(factory or default_engine_factory, self.config)
            await asyncio.to_thread(warm_up, engine)
        except Exception as exc:
            log.exception("model load failed")
            self.phase, self.error = "failed", f"model load failed: {exc}"
            self.on_fatal(self.error)
            return
        self.engine = engine
        if self.freeze_after_load:
            # What start-up made (modules, the model's Python objects, the tokenizer) lives as long as the
            # process; frozen, the collector's passes stop walking it while serving (host-side serving
            # bench: the HTTP path's cost 17% -> 10% for a burst of 256 streams, docs/benchmarks.md).
            gc.collect()
            gc.freeze()
        self.limits = ModelLimits(self.config.served_name, int(engine.max_model_len), len(engine.tokenizer),
                                  self.config.batching.max_num_seqs)
        self.async_engine = AsyncEngine(engine, max_waiting=self.config.batching.max_waiting, observer=self.metrics,
                                        on_fatal=self._engine_died)
        self.metrics.set_stats_source(self.async_engine.stats)
        if (topo := getattr(engine, "topology", None)) is not None:
            self.metrics.set_nvlink_peers(topo.nvlink_peers())
        self.async_engine.start()
        if self.config.runtime.step_timeout_s > 0:
            self._watchdog = asyncio.create_task(self._watch_steps(self.config.runtime.step_timeout_s))
        if self.phase == "loading":
            self.phase = "ready"

    async def _watch_steps(self, timeout: float) -> None:
        """Fail the worker when one engine step outlives `timeout`: a hung device or collective never
        returns, and a process whose event loop still answers /health would otherwise never restart."""
        while self.async_engine is not None and self.phase != "failed":
            await asyncio.sleep(min(5.0, timeout / 4))
            stalled = self.async_engine.stalled_seconds()
            if stalled > timeout:
                log.error("engine step stalled for %.0f s (runtime.step_timeout_s %.0f)", stalled, timeout)
                self._engine_died(RuntimeError(f"an engine step made no progress for {stalled:.0f} s "
                                               f"(runtime.step_timeout_s is {timeout:g}); the GPU, its driver or "
                                               "a tensor-parallel collective is hung"))
                return

    def _engine_died(self, exc: BaseException) -> None:
        # Not recoverable in-process (device state unknown): fail readiness and let the runner exit
        # non-zero so Kubernetes restarts the container.
        self.phase, self.error = "failed", f"engine failed: {exc!r}"
        self.on_fatal(self.error)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.async_engine is not None:
            await self.async_engine.stop()
        # Tensor/pipeline-parallel ranks are told to stop here, with the app, rather than by rank 0's
        # exit handler after the event loop is gone (a follower that dies before its stop message, e.g.
        # when rank 0 is killed, exits on its own: launch.exit_with_parent).
        close = getattr(getattr(self.engine, "runner", None), "close", None)
        if close is not None:
            await asyncio.to_thread(close)

    async def drain(self) -> int:
        """Stop admitting (and /ready says 503), let in-flight requests finish within drain_seconds."""
        self.phase = "draining"
        if self.async_engine is None:
            return 0
        return await self.async_engine.drain(self.config.server.drain_seconds)

    def ready_engine(self) -> AsyncEngine:
        if self.phase == "draining":
            self.metrics.on_request_done("rejected", None)
            raise APIError(503, "the worker is shutting down; retry on another replica", retry_after=RETRY_AFTER_S)
        if self.phase == "failed":
            raise APIError(503, self.error or "the engine failed")
        if self.async_engine is None:
            raise APIError(503, "the model is still loading; retry shortly", retry_after=5)
        if self.async_engine.fatal_error is not None:
            raise APIError(503, f"the engine failed: {self.async_engine.fatal_error}")
        return self.async_engine

    def readiness(self) -> tuple[int, dict]:
        c = self.config
        body = {
            "status": self.phase, "model": c.served_name, "task": c.model.task,
            "device": str(getattr(self.engine, "device", c.runtime.device)), "dtype": c.precision.dtype,
            "quantization": c.precision.quantization,
            "max_model_len": self.limits.max_model_len if self.limits else None,
            "topology": {"tensor": c.parallel.tensor, "pipeline": c.parallel.pipeline,
                         **({"gpus": topo.summary()} if (topo := getattr(self.engine, "topology", None)) else {})},
        }
        if self.error:
            body["error"] = self.error
        return (200 if self.phase == "ready" else 503), body


def rejection_error(exc: Rejected) -> APIError:
    if exc.reason == "queue_full":
        return APIError(429, str(exc), code="queue_full", retry_after=RETRY_AFTER_S)
    return APIError(503, str(exc), retry_after=RETRY_AFTER_S)
