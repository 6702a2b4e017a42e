"""The Grafana dashboard is valid JSON and queries only metrics that exist."""

from __future__ import annotations

import json
import re

from conftest import CHART, REPO

# The worker's metric contract (names from the project brief; the worker exports them on /metrics).
WORKER_METRICS = {
    "fms_requests_total", "fms_time_to_first_token_seconds", "fms_time_per_output_token_seconds",
    "fms_e2e_request_latency_seconds", "fms_prompt_tokens_total", "fms_generation_tokens_total",
    "fms_num_requests_running", "fms_num_requests_waiting", "fms_kv_cache_usage_ratio",
    "fms_prefix_cache_queries_total", "fms_prefix_cache_hits_total", "fms_preemptions_total",
    "fms_step_duration_seconds", "fms_batch_size", "fms_gpu_utilization_ratio", "fms_gpu_memory_used_bytes",
    "fms_gpu_memory_total_bytes", "fms_encoder_batch_size", "fms_encoder_queue_delay_seconds",
    "fms_encoder_request_latency_seconds", "fms_result_cache_queries_total", "fms_result_cache_hits_total",
}
_METRIC = re.compile(r"\b(fms_[a-z0-9_]+)")
_SUFFIX = re.compile(r"_(bucket|sum|count|total)$")


def _operator_metrics() -> set[str]:
    """Metric family names the operator registers (fms_operator/metrics.py), without sample suffixes."""
    from fms_operator import metrics
    from prometheus_client.metrics import MetricWrapperBase

    return {fam.name for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase) for fam in obj.describe()}


def _base(names: set[str]) -> set[str]:
    return {_SUFFIX.sub("", n) for n in names}


def _dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "fms.json").read_text())


def _exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _queried(dash: dict) -> set[str]:
    return _base({m for e in _exprs(dash) for m in _METRIC.findall(e)})


def test_dashboard_queries_only_known_metrics():
    unknown = _queried(_dashboard()) - _base(WORKER_METRICS) - _operator_metrics()
    assert not unknown, f"dashboard queries metrics nobody exports: {sorted(unknown)}"


def test_dashboard_covers_every_worker_and_operator_metric():
    missing = (_base(WORKER_METRICS) | _operator_metrics()) - _queried(_dashboard())
    assert not missing, f"no panel for: {sorted(missing)}"


def test_histograms_are_queried_through_buckets():
    for expr in _exprs(_dashboard()):
        if "histogram_quantile" in expr:
            assert re.search(r"_bucket[{[]", expr) and "by (le)" in expr, expr


def test_panels_have_unique_ids_and_use_the_datasource_variable():
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "fms-overview"
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "namespace", "pod"]


def test_worker_declares_every_metric_the_dashboard_uses():
    # Text search rather than import: the exporter's registry is built per process.
    source = "\n".join(p.read_text() for p in (REPO / "worker" / "fms_worker" / "metrics").glob("*.py"))
    declared = _base(set(re.findall(r'"(fms_[a-z0-9_]+)"', source)))
    missing = _base(WORKER_METRICS) - declared
    assert not missing, f"worker/fms_worker/metrics declares none of: {sorted(missing)}"
