"""The Prometheus collection path against a real Prometheus server.

The test starts Debian's `prometheus` (hack/install-prometheus.sh) with a
static scrape config pointing at two metrics endpoints served here, waits
until it has scraped them a few times, and checks what the collector derives.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
import time

import aiohttp
import pytest
from aiohttp import web

from fms_operator.api.resource import FMS
from fms_operator.autoscale.collector_prometheus import PrometheusCollector, PrometheusError, PrometheusSource
from fms_operator.autoscale.loop import Autoscaler
from fms_operator.autoscale.settings import AutoscaleSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary: run hack/install-prometheus.sh"),
]

TOKENS_PER_S = {"svc-0": 40.0, "svc-1": 20.0}
KV = {"svc-0": 0.3, "svc-1": 0.5}


def exposition(pod: str, elapsed: float) -> str:
    # Every first token lands in (0.5, 1.0] at 10 per second: p90 = 0.5 + 0.5 * 0.9.
    ttft_count = 10 * elapsed
    return "\n".join([
        "# TYPE fms_kv_cache_usage_ratio gauge",
        f"fms_kv_cache_usage_ratio {KV[pod]}",
        "# TYPE fms_num_requests_waiting gauge",
        f"fms_num_requests_waiting {3 if pod == 'svc-0' else 5}",
        "# TYPE fms_num_requests_running gauge",
        "fms_num_requests_running 8",
        "# TYPE fms_generation_tokens_total counter",
        f"fms_generation_tokens_total {TOKENS_PER_S[pod] * elapsed}",
        "# TYPE fms_time_to_first_token_seconds histogram",
        'fms_time_to_first_token_seconds_bucket{le="0.5"} 0',
        f'fms_time_to_first_token_seconds_bucket{{le="1.0"}} {ttft_count}',
        f'fms_time_to_first_token_seconds_bucket{{le="+Inf"}} {ttft_count}',
        f"fms_time_to_first_token_seconds_count {ttft_count}",
        f"fms_time_to_first_token_seconds_sum {0.7 * ttft_count}",
    ]) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def endpoints():
    start = time.monotonic()
    runners, ports = [], {}
    for pod in TOKENS_PER_S:
        async def handler(request: web.Request, pod: str = pod) -> web.Response:
            return web.Response(text=exposition(pod, time.monotonic() - start), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports[pod] = runner.addresses[0][1]
    yield ports
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def prometheus(endpoints, tmp_path):
    port = free_port()
    jobs = "\n".join(
        f"      - targets: ['127.0.0.1:{p}']\n        labels: {{namespace: team-a, pod: {pod}}}" for pod, p in endpoints.items()
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: fms\n    static_configs:\n" + jobs + "\n"
    )
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    async with session.get(f"{url}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("prometheus did not become ready in 20 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def test_prometheus_collector_reads_what_prometheus_scraped(prometheus):
    async with aiohttp.ClientSession() as session:
        collector = PrometheusCollector(session, PrometheusSource(url=prometheus, window="10s"))
        # rate() underestimates until the series fill the whole window, so
        # wait until both pods have a window's worth of scrapes.
        deadline = time.monotonic() + 40
        filled = 'min(count_over_time(fms_generation_tokens_total{namespace="team-a"}[10s])) >= 9 and count(up == 1) == 2'
        while not await collector.query(filled):
            assert time.monotonic() < deadline, "prometheus did not scrape both endpoints for 10 s within 40 s"
            await asyncio.sleep(1)
        sig = await collector.collect("team-a", ["svc-0", "svc-1"])
        assert sig.sampled == 2
        assert sig.kv_usage == pytest.approx(0.4)
        assert sig.queue == pytest.approx(4.0)
        assert sig.running == pytest.approx(8.0)
        assert sig.gpu_util is None  # not exported by these endpoints
        assert sig.tokens_per_s == pytest.approx(30.0, rel=0.15)
        assert sig.ttft_p90 == pytest.approx(0.95, rel=0.05)

        # Restricting to one pod averages over that pod only.
        one = await collector.collect("team-a", ["svc-1"])
        assert one.sampled == 1 and one.kv_usage == pytest.approx(0.5)
        # Another namespace has none of these series.
        other = await collector.collect("team-b", ["svc-0"])
        assert other.sampled == 0 and other.kv_usage is None and not math.isnan(other.queue or 0)

        # The whole evaluation on the Prometheus path: kv usage 0.4 against 0.2 doubles 2 replicas.
        source = PrometheusSource(url=prometheus, window="10s")
        autoscaler = Autoscaler(AutoscaleSettings(source="prometheus", prometheus=source), session)
        fms = FMS.from_body({
            "metadata": {"name": "svc", "namespace": "team-a", "uid": "u1"},
            "spec": {"model": {"source": {"local": {"path": "/m"}}}, "replicas": 2,
                     "autoscaling": {"maxReplicas": 8, "metric": "kvCacheUsage", "target": 0.2}},
        })
        pods = [{"metadata": {"name": n}, "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9090}]}]},
                 "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
                for n in ("svc-0", "svc-1")]
        ev = await autoscaler.evaluate(fms, pods)
        assert ev.decision.desired == 4, ev.decision.reason


async def test_prometheus_errors_are_reported(prometheus):
    async with aiohttp.ClientSession() as session:
        collector = PrometheusCollector(session, PrometheusSource(url=prometheus))
        with pytest.raises(PrometheusError, match="bad_data"):
            await collector.query("rate(fms_generation_tokens_total[")
        down = PrometheusCollector(session, PrometheusSource(url=f"http://127.0.0.1:{free_port()}", timeout_s=1))
        with pytest.raises(PrometheusError, match="failed"):
            await down.collect("team-a", ["svc-0"])
