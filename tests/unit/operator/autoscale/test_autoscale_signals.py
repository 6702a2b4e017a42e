"""Parsing of worker metrics text and the window arithmetic over two samples."""

from __future__ import annotations

import math

import pytest

from fms_operator.autoscale.sample import MetricsParseError, PodSample, parse_metrics_text
from fms_operator.autoscale.signals import Signals, from_samples, histogram_quantile, value_of


def metrics_text(*, kv=0.5, waiting=3, running=7, gen=1000.0, ttft=(1, 5, 9, 10), gpus=(0.9, 0.7)) -> str:
    """Exposition text shaped like the worker's (with unrelated families around)."""
    les = ("0.1", "0.5", "1.0", "+Inf")
    lines = [
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
        'python_gc_objects_collected_total{generation="0"} 123.0',
        "# HELP fms_kv_cache_usage_ratio KV cache usage",
        "# TYPE fms_kv_cache_usage_ratio gauge",
        f'fms_kv_cache_usage_ratio{{model_name="m"}} {kv}',
        "# HELP fms_num_requests_waiting Waiting",
        "# TYPE fms_num_requests_waiting gauge",
        f'fms_num_requests_waiting{{model_name="m"}} {waiting}',
        "# HELP fms_num_requests_running Running",
        "# TYPE fms_num_requests_running gauge",
        f'fms_num_requests_running{{model_name="m"}} {running}',
        "# HELP fms_gpu_utilization_ratio GPU util",
        "# TYPE fms_gpu_utilization_ratio gauge",
        *(f'fms_gpu_utilization_ratio{{gpu="{i}"}} {u}' for i, u in enumerate(gpus)),
        "# HELP fms_generation_tokens_total Generated tokens",
        "# TYPE fms_generation_tokens_total counter",
        f'fms_generation_tokens_total{{model_name="m"}} {gen}',
        "# HELP fms_time_to_first_token_seconds TTFT",
        "# TYPE fms_time_to_first_token_seconds histogram",
        *(f'fms_time_to_first_token_seconds_bucket{{le="{le}",model_name="m"}} {c}' for le, c in zip(les, ttft)),
        f'fms_time_to_first_token_seconds_count{{model_name="m"}} {ttft[-1]}',
        f'fms_time_to_first_token_seconds_sum{{model_name="m"}} 3.2',
        "# HELP fms_requests_total Requests",
        "# TYPE fms_requests_total counter",
        'fms_requests_total{outcome="success"} 10.0',
    ]
    return "\n".join(lines) + "\n"


def test_parse_reads_the_autoscaling_families():
    s = parse_metrics_text("p0", 5.0, metrics_text())
    assert (s.kv_usage, s.waiting, s.running, s.generation_tokens) == (0.5, 3, 7, 1000.0)
    assert s.gpu_util == pytest.approx(0.8)
    assert s.ttft_buckets == {0.1: 1, 0.5: 5, 1.0: 9, math.inf: 10}


def test_parse_missing_families_are_none():
    s = parse_metrics_text("p0", 0.0, "# TYPE fms_num_requests_waiting gauge\nfms_num_requests_waiting 2\n")
    assert s.waiting == 2 and s.kv_usage is None and s.ttft_buckets == {}


def test_parse_garbage_raises():
    with pytest.raises(MetricsParseError, match="p0"):
        parse_metrics_text("p0", 0.0, "fms_num_requests_waiting not-a-number\n")


def test_from_samples_rates_and_quantile():
    before = {
        "a": parse_metrics_text("a", 0.0, metrics_text(gen=100, ttft=(0, 0, 0, 0))),
        "b": parse_metrics_text("b", 0.0, metrics_text(gen=0, ttft=(0, 0, 0, 0))),
    }
    now = [
        parse_metrics_text("a", 10.0, metrics_text(kv=0.2, waiting=2, gen=1100, ttft=(2, 4, 10, 10))),
        parse_metrics_text("b", 10.0, metrics_text(kv=0.6, waiting=6, gen=500, ttft=(0, 0, 10, 10))),
    ]
    sig = from_samples(before, now)
    assert sig.sampled == 2
    assert sig.kv_usage == pytest.approx(0.4)
    assert sig.queue == 4
    assert sig.tokens_per_s == pytest.approx((100 + 50) / 2)
    # 20 observations, rank 18 lies in (0.5, 1.0]: 4 below, 20 at 1.0 -> 0.5 + 0.5 * 14/16
    assert sig.ttft_p90 == pytest.approx(0.5 + 0.5 * 14 / 16)


def test_counter_reset_counts_from_zero():
    before = {"a": PodSample("a", 0.0, generation_tokens=5000.0)}
    sig = from_samples(before, [PodSample("a", 10.0, generation_tokens=300.0)])
    assert sig.tokens_per_s == pytest.approx(30.0)


def test_first_round_has_gauges_but_no_rates():
    sig = from_samples({}, [parse_metrics_text("a", 1.0, metrics_text())])
    assert sig.kv_usage == 0.5 and sig.tokens_per_s is None and sig.ttft_p90 is None


@pytest.mark.parametrize(
    "buckets, expected",
    [
        ({}, None),
        ({1.0: 0, math.inf: 0}, None),
        ({1.0: 10, math.inf: 10}, 0.9),
        ({1.0: 0, 2.0: 10, math.inf: 10}, 1.9),
        ({1.0: 0, 2.0: 0, math.inf: 10}, 2.0),  # everything above the top bound: the top bound
    ],
)
def test_histogram_quantile(buckets, expected):
    got = histogram_quantile(0.9, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def test_saturation_is_max_of_components_and_ignores_missing():
    sig = Signals(sampled=2, kv_usage=0.35, running=64, queue=6.0, ttft_p90=None, gpu_util=1.0)
    assert value_of(sig, "saturation") == pytest.approx(0.75)  # queue 6/8 beats kv 0.35, running 64/256
    assert value_of(sig, "saturation", {"runningRequests": 32}) == pytest.approx(2.0)  # batch slots full twice over
    assert value_of(Signals(sampled=1, ttft_p90=3.0), "saturation") == pytest.approx(1.5)
    assert value_of(sig, "gpuUtilization") == 1.0
    assert value_of(Signals(sampled=0), "saturation") is None
    assert value_of(Signals(sampled=1), "saturation") is None
