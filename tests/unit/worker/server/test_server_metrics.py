"""The exporter: every contract metric name is exposed; request latencies come from RequestTimes."""

from __future__ import annotations

from fms_worker.engine.types import CompletionOutput, EngineStats, RequestOutput, RequestTimes
from fms_worker.gpu_info import GPUReading
from fms_worker.metrics import ServingMetrics
from fms_worker.metrics.exporter import request_latencies

CONTRACT = ["fms_requests_total", "fms_time_to_first_token_seconds", "fms_time_per_output_token_seconds",
            "fms_e2e_request_latency_seconds", "fms_prompt_tokens_total", "fms_generation_tokens_total",
            "fms_num_requests_running", "fms_num_requests_waiting", "fms_kv_cache_usage_ratio",
            "fms_prefix_cache_queries_total", "fms_prefix_cache_hits_total", "fms_preemptions_total",
            "fms_step_duration_seconds", "fms_batch_size"]


class FakeGPU:
    def read(self):
        return [GPUReading(0, 0.5, 10, 80), GPUReading(1, 0.25, 20, 80)]


def _finished(n_tokens: int) -> RequestOutput:
    times = RequestTimes(arrival=10.0, first_token=10.5, last_token=10.5 + 0.1 * (n_tokens - 1), finished=11.0)
    o = CompletionOutput(0, list(range(n_tokens)), "x" * n_tokens, finish_reason="length")
    return RequestOutput("r", [1, 2], [o], True, times)


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in exposition")


def test_contract_names_and_snapshot_values():
    m = ServingMetrics(gpu=FakeGPU())
    m.set_stats_source(lambda: EngineStats(num_running=3, num_waiting=2, kv_cache_usage=0.25, prompt_tokens=40,
                                           generation_tokens=7, prefix_cache_queries=9, prefix_cache_hits=4,
                                           num_preemptions=1))
    m.on_step(EngineStats(last_step_seconds=0.02, last_batch_size=3))
    m.on_request_done("success", _finished(5))
    m.on_request_done("rejected", None)
    text = m.render().decode()
    for name in CONTRACT:
        assert f"# TYPE {name} " in text, name
    assert _sample(text, "fms_num_requests_running") == 3
    assert _sample(text, "fms_kv_cache_usage_ratio") == 0.25
    assert _sample(text, "fms_prefix_cache_hits_total") == 4
    assert _sample(text, 'fms_requests_total{outcome="success"}') == 1
    assert _sample(text, 'fms_requests_total{outcome="rejected"}') == 1
    assert _sample(text, 'fms_requests_total{outcome="abort"}') == 0
    assert _sample(text, "fms_time_to_first_token_seconds_count") == 1
    assert _sample(text, "fms_batch_size_sum") == 3
    assert _sample(text, 'fms_gpu_utilization_ratio{gpu="1"}') == 0.25
    assert _sample(text, 'fms_gpu_memory_total_bytes{gpu="0"}') == 80


def test_request_latencies():
    lat = request_latencies(_finished(5))
    assert lat["ttft"] == 0.5 and lat["e2e"] == 1.0
    assert abs(lat["tpot"] - 0.1) < 1e-9
    assert "tpot" not in request_latencies(_finished(1))


def test_no_gpu_no_gpu_series():
    class NoGPU:
        def read(self):
            return []

    assert "fms_gpu" not in ServingMetrics(gpu=NoGPU()).render().decode()
