"""Per-replica signals of one fms over one evaluation window, and the metric
the policy scales on.

Both collection paths end here: the scrape path builds Signals from two
rounds of PodSamples (`from_samples`), the Prometheus path from query results
(collector_prometheus.py). The metric formulas live in one place (`value_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .sample import PodSample

MetricName = Literal[
    "saturation", "kvCacheUsage", "queueDepth", "gpuUtilization", "runningRequests", "tokensPerSecond", "ttftP90"
]

# Saturation divides each component by the level at which a replica counts as
# full (1.0): the KV cache is full at 1.0, the batch when running reaches
# maxNumSeqs (the loop passes the spec's value), users notice a queue of 8
# per replica and a p90 time to first token of 2 s.
SATURATION_REFS: dict[str, float] = {
    "kvCacheUsage": 1.0,
    "runningRequests": 256.0,
    "queueDepth": 8.0,
    "ttftP90": 2.0,
}


@dataclass(frozen=True)
class Signals:
    """Means per sampled replica (None: no replica reported it this window)."""

    sampled: int
    kv_usage: float | None = None
    queue: float | None = None
    running: float | None = None
    gpu_util: float | None = None
    tokens_per_s: float | None = None
    ttft_p90: float | None = None
    # In-flight requests (running + waiting) per sampled pod: picks the pod to remove.
    load_by_pod: dict[str, float] = field(default_factory=dict)

    def by_metric(self) -> dict[str, float | None]:
        return {
            "kvCacheUsage": self.kv_usage,
            "queueDepth": self.queue,
            "runningRequests": self.running,
            "gpuUtilization": self.gpu_util,
            "tokensPerSecond": self.tokens_per_s,
            "ttftP90": self.ttft_p90,
        }

    def as_inputs(self) -> dict[str, float | None]:
        """Rounded, for status and Events."""
        return {k: None if v is None else round(v, 4) for k, v in self.by_metric().items()}


def value_of(signals: Signals, metric: MetricName, refs: dict[str, float] | None = None) -> float | None:
    """The observed value compared against the policy's target.

    saturation = max(kv_usage / 1.0, running / maxNumSeqs, queue / 8, ttft_p90 / 2 s)
    over the components observed this window (see SATURATION_REFS; `refs`
    overrides some, e.g. {"runningRequests": spec.batching.maxNumSeqs}).
    """
    if not signals.sampled:
        return None
    observed = signals.by_metric()
    if metric != "saturation":
        return observed[metric]
    refs = SATURATION_REFS | (refs or {})
    parts = [observed[k] / refs[k] for k in refs if observed[k] is not None]
    return max(parts) if parts else None


def from_samples(previous: dict[str, PodSample], current: list[PodSample]) -> Signals:
    """Gauges come from `current`; rates and the TTFT quantile from the change
    since the same pod's `previous` sample (pods new this round add none)."""
    if not current:
        return Signals(sampled=0)
    rates: list[float] = []
    bucket_deltas: dict[float, float] = {}
    for s in current:
        before = previous.get(s.pod)
        if before is None or s.time <= before.time:
            continue
        if s.generation_tokens is not None and before.generation_tokens is not None:
            rates.append(_increase(before.generation_tokens, s.generation_tokens) / (s.time - before.time))
        for le, count in s.ttft_buckets.items():
            bucket_deltas[le] = bucket_deltas.get(le, 0.0) + _increase(before.ttft_buckets.get(le, 0.0), count)
    return Signals(
        sampled=len(current),
        kv_usage=_mean(s.kv_usage for s in current),
        queue=_mean(s.waiting for s in current),
        running=_mean(s.running for s in current),
        gpu_util=_mean(s.gpu_util for s in current),
        tokens_per_s=sum(rates) / len(rates) if rates else None,
        ttft_p90=histogram_quantile(0.9, bucket_deltas),
        load_by_pod={s.pod: (s.running or 0.0) + (s.waiting or 0.0) for s in current},
    )


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Quantile of cumulative bucket counts by linear interpolation inside the
    bucket, as PromQL's histogram_quantile does. None when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # the top finite bound is the best upper estimate PromQL gives too
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _increase(before: float, after: float) -> float:
    # A counter that went down was reset (worker restart): count from zero.
    return after - before if after >= before else after


def _mean(values) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None
