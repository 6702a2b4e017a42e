"""The operator's own Prometheus metrics (the only module importing prometheus_client)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter("fms_operator_reconciles_total", "Reconciles run, by trigger.", ["trigger"])
ERRORS = Counter("fms_operator_reconcile_errors_total", "Reconciles that failed, by trigger.", ["trigger"])
DURATION = Histogram("fms_operator_reconcile_duration_seconds", "Wall time of one reconcile.",
                     buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WRITES = Counter("fms_operator_writes_total", "Writes to the API server, by kind and verb.", ["kind", "verb"])
STARTUP = Histogram("fms_operator_replica_startup_seconds",
                    "Worker pod start-up, PodScheduled -> Ready (model fetch, load and warm-up), once per pod.",
                    buckets=(5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600))


@contextmanager
def reconcile_timer(trigger: str) -> Iterator[None]:
    RECONCILES.labels(trigger).inc()
    start = time.perf_counter()
    try:
        yield
    except Exception:
        ERRORS.labels(trigger).inc()
        raise
    finally:
        DURATION.observe(time.perf_counter() - start)


def count_write(kind: str, verb: str) -> None:
    WRITES.labels(kind, verb).inc()


def serve(port: int) -> None:
    start_http_server(port)


def observe_startup(seconds: float) -> None:
    STARTUP.observe(seconds)
