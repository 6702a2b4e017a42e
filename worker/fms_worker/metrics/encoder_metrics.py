"""Prometheus exporter for the embed/classify tasks: implements the encoder service's observer interface.

Shares `fms_requests_total` with the generate exporter when both live in one
registry (the app passes its registry in); otherwise it creates it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from fms_worker.encoders.types import BatchRecord

OUTCOMES = ("success", "error", "abort", "rejected")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_DELAY_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EncoderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = _existing(r, "fms_requests_total") or Counter(
            "fms_requests", "Finished requests by outcome.", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.batch_size = Histogram("fms_encoder_batch_size", "Inputs in one encoder forward pass.",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.queue_delay = Histogram("fms_encoder_queue_delay_seconds", "Per input: queued until its batch started.",
                                     buckets=_DELAY_BUCKETS, registry=r)
        self.latency = Histogram("fms_encoder_request_latency_seconds", "Per request: arrival to all results.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.cache_queries = Counter("fms_result_cache_queries", "Inputs looked up in the result cache.", registry=r)
        self.cache_hits = Counter("fms_result_cache_hits", "Inputs answered from the result cache.", registry=r)

    # ---- EncoderObserver -----------------------------------------------------------------------

    def on_batch(self, record: BatchRecord) -> None:
        self.batch_size.observe(record.size)
        for delay in record.queue_delays_s:
            self.queue_delay.observe(delay)

    def on_request_done(self, outcome: str, latency_s: float) -> None:
        self.requests.labels(outcome).inc()
        if outcome == "success":
            self.latency.observe(latency_s)

    def on_cache(self, queries: int, hits: int) -> None:
        self.cache_queries.inc(queries)
        self.cache_hits.inc(hits)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _existing(registry: CollectorRegistry, name: str):
    # prometheus_client has no public lookup; the mapping has been stable across releases.
    return getattr(registry, "_names_to_collectors", {}).get(name)
