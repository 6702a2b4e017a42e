"""One scrape of one worker's /metrics, reduced to the numbers autoscaling uses.

The worker exports many families (python_gc, process_*, encoder histograms);
only the handful named in FAMILIES matter here, so lines of other families are
dropped before the Prometheus text parser sees them: with 1,500 pods per round
parsing is the collector's main cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

KV_USAGE = "fms_kv_cache_usage_ratio"
WAITING = "fms_num_requests_waiting"
RUNNING = "fms_num_requests_running"
GPU_UTIL = "fms_gpu_utilization_ratio"
GEN_TOKENS = "fms_generation_tokens"  # counter family; samples end in _total
TTFT = "fms_time_to_first_token_seconds"

FAMILIES = (KV_USAGE, WAITING, RUNNING, GPU_UTIL, GEN_TOKENS, TTFT)
_KEEP = tuple(FAMILIES) + tuple(f"# TYPE {name}" for name in FAMILIES)
# Series of kept families that nothing reads; the parser's cost is per sample.
_DROP = (f"{TTFT}_sum", f"{TTFT}_count", f"{TTFT}_created", f"{GEN_TOKENS}_created")


@dataclass(frozen=True)
class PodSample:
    """Raw values of one pod at one instant. Counters stay cumulative; the
    window arithmetic happens in signals.py, between two samples."""

    pod: str
    time: float
    kv_usage: float | None = None
    waiting: float | None = None
    running: float | None = None
    gpu_util: float | None = None
    generation_tokens: float | None = None
    # Cumulative TTFT bucket counts keyed by upper bound (math.inf for +Inf).
    ttft_buckets: dict[float, float] = field(default_factory=dict)


class MetricsParseError(ValueError):
    pass


def parse_metrics_text(pod: str, time: float, text: str) -> PodSample:
    """Parses Prometheus text exposition into a PodSample.

    Several series of one gauge (e.g. per model or per GPU label) are combined
    the way the autoscaler reads them: usage ratios by max (the fullest cache
    limits the pod), queue lengths and counters by sum, GPU utilization by mean.
    """
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_KEEP) and not line.startswith(_DROP))
    values: dict[str, list[float]] = {}
    buckets: dict[float, float] = {}
    try:
        for family in text_string_to_metric_families(wanted + "\n"):
            for s in family.samples:
                if s.name == f"{TTFT}_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif s.name in (KV_USAGE, WAITING, RUNNING, GPU_UTIL, f"{GEN_TOKENS}_total"):
                    values.setdefault(s.name, []).append(s.value)
    except (ValueError, KeyError, IndexError) as e:
        raise MetricsParseError(f"pod {pod}: unparsable metrics text: {e}") from e

    def pick(name: str, combine) -> float | None:
        vs = [v for v in values.get(name, ()) if not math.isnan(v)]
        return combine(vs) if vs else None

    return PodSample(
        pod=pod,
        time=time,
        kv_usage=pick(KV_USAGE, max),
        waiting=pick(WAITING, sum),
        running=pick(RUNNING, sum),
        gpu_util=pick(GPU_UTIL, lambda vs: sum(vs) / len(vs)),
        generation_tokens=pick(f"{GEN_TOKENS}_total", sum),
        ttft_buckets=buckets,
    )
