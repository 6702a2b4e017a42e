"""Prometheus exporter for the generate task.

Data first: the engine produces EngineStats snapshots and RequestOutput.times;
this module only turns them into metrics. Cumulative engine counters and gauges
are read from the latest snapshot at scrape time (a custom collector), so the
engine never calls into Prometheus. Histograms are fed per step (engine thread)
and per finished request (event loop); prometheus_client is thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fms_worker.engine.types import EngineStats, RequestOutput
from fms_worker.gpu_info import GPUInfo

# The *_created series double the exposition size and no dashboard reads them.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

OUTCOMES = ("success", "error", "abort", "rejected")

# Latency buckets span CPU test runs (seconds) down to fast GPU decode (milliseconds).
_TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
_TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 60, 120, 300, 600)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """Implements the AsyncEngine Observer interface; owns one registry (one per app, so tests can build many)."""

    def __init__(self, gpu: GPUInfo | None = None, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("fms_requests", "Finished requests by outcome.", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)  # export zeros so rate() works from the first scrape
        self.ttft = Histogram("fms_time_to_first_token_seconds", "Arrival to first generated token.",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("fms_time_per_output_token_seconds",
                              "Mean time between output tokens after the first, per request.",
                              buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("fms_e2e_request_latency_seconds", "Arrival to last token.", buckets=_E2E_BUCKETS,
                             registry=r)
        self.step = Histogram("fms_step_duration_seconds", "Wall time of one engine step.", buckets=_STEP_BUCKETS,
                              registry=r)
        self.batch = Histogram("fms_batch_size", "Sequences in one engine step.", buckets=_BATCH_BUCKETS, registry=r)
        self._snapshot = _SnapshotCollector(gpu if gpu is not None else GPUInfo())
        r.register(self._snapshot)

    def set_stats_source(self, source: Callable[[], EngineStats]) -> None:
        self._snapshot.source = source

    def set_nvlink_peers(self, peers: dict[int, int]) -> None:
        """From the worker's start-up topology read (fms_worker.topology)."""
        self._snapshot.nvlink_peers = peers

    # ---- Observer --------------------------------------------------------------------------

    def on_step(self, stats: EngineStats) -> None:
        self.step.observe(stats.last_step_seconds)
        if stats.last_batch_size:
            self.batch.observe(stats.last_batch_size)

    def on_request_done(self, outcome: str, last: RequestOutput | None) -> None:
        self.requests.labels(outcome).inc()
        if outcome == "success" and last is not None:
            for name, value in request_latencies(last).items():
                getattr(self, name).observe(value)

    def render(self) -> bytes:
        """Text exposition: this app's metrics plus the process-wide registry (process_*, and
        metrics other modules register globally, e.g. the encoder's)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


def request_latencies(out: RequestOutput) -> dict[str, float]:
    """TTFT, TPOT and e2e of a finished request, in seconds (only the ones its times allow)."""
    t = out.times
    end = t.finished or t.last_token or time.monotonic()
    latencies = {"e2e": end - t.arrival}
    if t.first_token is not None:
        latencies["ttft"] = t.first_token - t.arrival
        generated = max((len(o.token_ids) for o in out.outputs), default=0)
        if generated > 1 and t.last_token is not None:
            latencies["tpot"] = (t.last_token - t.first_token) / (generated - 1)
    return latencies


class _SnapshotCollector(Collector):
    """Gauges and cumulative counters straight from the latest EngineStats, plus NVML readings."""

    def __init__(self, gpu: GPUInfo):
        self.gpu = gpu
        self.source: Callable[[], EngineStats] = EngineStats
        self.nvlink_peers: dict[int, int] = {}

    def collect(self) -> Iterable[Metric]:
        s = self.source()
        yield _gauge("fms_num_requests_running", "Sequences running in the engine.", s.num_running)
        yield _gauge("fms_num_requests_waiting", "Requests queued in the engine, not yet running.", s.num_waiting)
        yield _gauge("fms_kv_cache_usage_ratio", "Used KV blocks / total KV blocks (0..1).", s.kv_cache_usage)
        yield _counter("fms_prompt_tokens", "Prompt tokens computed (prefix-cache hits excluded).", s.prompt_tokens)
        yield _counter("fms_generation_tokens", "Tokens generated.", s.generation_tokens)
        yield _counter("fms_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                       s.prefix_cache_queries)
        yield _counter("fms_prefix_cache_hits", "Prompt tokens found in the prefix cache.", s.prefix_cache_hits)
        yield _counter("fms_preemptions", "Sequences preempted for lack of KV blocks.", s.num_preemptions)
        readings = self.gpu.read()
        if readings:
            util = GaugeMetricFamily("fms_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"])
            used = GaugeMetricFamily("fms_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"])
            total = GaugeMetricFamily("fms_gpu_memory_total_bytes", "GPU memory size (NVML).", labels=["gpu"])
            for g in readings:
                util.add_metric([str(g.index)], g.utilization)
                used.add_metric([str(g.index)], g.memory_used_bytes)
                total.add_metric([str(g.index)], g.memory_total_bytes)
            yield from (util, used, total)
        if self.nvlink_peers:
            peers = GaugeMetricFamily("fms_gpu_nvlink_peers", "GPUs this GPU reaches over NVLink (NVML, read at start).",
                                      labels=["gpu"])
            for gpu, n in sorted(self.nvlink_peers.items()):
                peers.add_metric([str(gpu)], n)
            yield peers

    def describe(self) -> Iterable[Metric]:
        return []  # values come at scrape time; skip the registration-time collect()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
