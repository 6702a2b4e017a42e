"""The scrape collector against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from fms_operator.autoscale.collector_scrape import ScrapeCollector, ScrapeTarget

from test_autoscale_signals import metrics_text


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def metrics_server():
    """Serves /a, /b (settable texts), /slow (never answers in time), /broken (500), /junk."""
    texts = {"a": metrics_text(kv=0.2, waiting=2, gen=0), "b": metrics_text(kv=0.6, waiting=6, gen=0)}

    async def pod(request: web.Request) -> web.Response:
        return web.Response(text=texts[request.match_info["pod"]], content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def junk(request: web.Request) -> web.Response:
        return web.Response(text="fms_num_requests_waiting NaNx\n")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/broken", broken)
    app.router.add_get("/junk", junk)
    app.router.add_get("/{pod}", pod)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", texts
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_collect_two_rounds_gives_gauges_and_rates(metrics_server):
    base, texts = metrics_server
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        collector = ScrapeCollector(session, timeout_s=1.0, clock=clock)
        targets = [ScrapeTarget("a", f"{base}/a"), ScrapeTarget("b", f"{base}/b")]
        first = await collector.collect("ns/svc", targets)
        assert first.sampled == 2 and first.kv_usage == pytest.approx(0.4) and first.queue == 4
        assert first.tokens_per_s is None

        texts["a"] = metrics_text(kv=0.2, waiting=2, gen=300)
        texts["b"] = metrics_text(kv=0.6, waiting=6, gen=100)
        clock.now = 10.0
        second = await collector.collect("ns/svc", targets)
        assert second.tokens_per_s == pytest.approx((30 + 10) / 2)


async def test_failed_pods_are_missing_not_zero(metrics_server):
    base, _ = metrics_server
    async with aiohttp.ClientSession() as session:
        collector = ScrapeCollector(session, timeout_s=0.5)
        targets = [
            ScrapeTarget("a", f"{base}/a"),
            ScrapeTarget("slow", f"{base}/slow"),
            ScrapeTarget("broken", f"{base}/broken"),
            ScrapeTarget("junk", f"{base}/junk"),
            ScrapeTarget("gone", f"http://127.0.0.1:{closed_port()}/metrics"),
        ]
        loop = asyncio.get_running_loop()
        start = loop.time()
        sig = await collector.collect("ns/svc", targets)
        elapsed = loop.time() - start
    assert sig.sampled == 1 and sig.kv_usage == pytest.approx(0.2)
    assert elapsed < 2.0, "scrapes must run concurrently and honour the timeout"


async def test_all_pods_failing_gives_no_signal():
    async with aiohttp.ClientSession() as session:
        collector = ScrapeCollector(session, timeout_s=0.5)
        sig = await collector.collect("k", [ScrapeTarget("x", f"http://127.0.0.1:{closed_port()}/metrics")])
    assert sig.sampled == 0 and sig.kv_usage is None
