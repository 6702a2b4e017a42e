"""How long one autoscaling evaluation round takes for many fms objects.

Starts a separate process serving simulated worker /metrics endpoints (one
aiohttp site per pod, each on its own loopback IP at port 9090, as kwok pods
have) with text from the worker's real exporter, then times rounds of
Autoscaler.evaluate over every fms at once: scrape all pods concurrently,
parse, decide. Kubernetes calls are not part of the round (pods are given).

    .venv/bin/python bench/autoscale_round.py --fms 500 --replicas 3 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time

from aiohttp import web

from fms_operator.api.resource import FMS
from fms_operator.autoscale.collector_scrape import new_session
from fms_operator.autoscale.loop import Autoscaler
from fms_operator.autoscale.settings import AutoscaleSettings

PORT = 9090


def pod_ip(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def exposition() -> str:
    """What a busy worker exports, rendered by the worker's own exporter."""
    from fms_worker.engine.types import EngineStats
    from fms_worker.metrics.exporter import ServingMetrics

    m = ServingMetrics()
    m.set_stats_source(lambda: EngineStats(num_running=12, num_waiting=3, kv_cache_usage=0.55,
                                           generation_tokens=123456, prompt_tokens=654321))
    for i in range(200):
        m.ttft.observe(0.05 + (i % 40) * 0.01)
        m.tpot.observe(0.02)
        m.e2e.observe(1.5)
        m.step.observe(0.03)
        m.batch.observe(12)
    return m.render().decode()


def serve(n_pods: int, ready, stop) -> None:
    text = exposition()

    async def main() -> None:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=text, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for i in range(n_pods):
            await web.TCPSite(runner, pod_ip(i), PORT, backlog=512).start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await runner.cleanup()

    asyncio.run(main())


def fms_objects(n_fms: int, replicas: int) -> list[tuple[FMS, list[dict]]]:
    out = []
    for f in range(n_fms):
        body = {"metadata": {"name": f"svc-{f}", "namespace": "bench", "uid": f"uid-{f}"},
                "spec": {"model": {"source": {"local": {"path": "/m"}}}, "replicas": replicas,
                         "autoscaling": {"minReplicas": 1, "maxReplicas": 10, "metric": "saturation", "target": 0.7}}}
        pods = []
        for r in range(replicas):
            i = f * replicas + r
            pods.append({"metadata": {"name": f"svc-{f}-{r}"},
                         "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": PORT}]}]},
                         "status": {"phase": "Running", "podIP": pod_ip(i),
                                    "conditions": [{"type": "Ready", "status": "True"}]}})
        out.append((FMS.from_body(body), pods))
    return out


async def bench(n_fms: int, replicas: int, rounds: int) -> None:
    settings = AutoscaleSettings()
    objects = fms_objects(n_fms, replicas)
    async with new_session(settings.scrape_timeout_s) as session:
        autoscaler = Autoscaler(settings, session)
        times, cpu = [], []
        for r in range(rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            evals = await asyncio.gather(*(autoscaler.evaluate(fms, pods) for fms, pods in objects))
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            sampled = sum(e.signals.sampled for e in evals)
            print(f"round {r + 1}: {times[-1]:.3f} s wall, {cpu[-1]:.3f} s CPU ({sampled}/{n_fms * replicas} pods sampled)")
    warm, warm_cpu = times[1:] or times, cpu[1:] or cpu
    # CPU seconds of the operator side alone: the wall figure also depends on
    # what else the (shared) machine runs, the server process included.
    print(f"{n_fms} fms x {replicas} replicas: first round {times[0]:.3f} s, later rounds median "
          f"{statistics.median(warm):.3f} s wall (min {min(warm):.3f}, max {max(warm):.3f}), "
          f"median {statistics.median(warm_cpu):.3f} CPU s; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fms", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n_pods = args.fms * args.replicas
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve, args=(n_pods, ready, stop), daemon=True)
    server.start()
    try:
        if not ready.wait(120):
            raise SystemExit("metrics servers did not start in 120 s")
        asyncio.run(bench(args.fms, args.replicas, args.rounds))
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()


if __name__ == "__main__":
    main()
