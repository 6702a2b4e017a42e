"""Collection path 2: instant queries against a Prometheus server's HTTP API.

The series are selected by the namespace and pod labels Prometheus attached
when it scraped the workers (the names of those labels are configurable, as
relabeling differs between installs) and restricted to the fms's Ready pods,
so both paths average over the same replicas.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import aiohttp

from .sample import GEN_TOKENS, GPU_UTIL, KV_USAGE, RUNNING, TTFT, WAITING
from .signals import Signals


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class PrometheusSource:
    url: str
    window: str = "1m"  # rate() range: at least two scrape intervals of the server
    namespace_label: str = "namespace"
    pod_label: str = "pod"
    timeout_s: float = 5.0


class PrometheusCollector:
    def __init__(self, session: aiohttp.ClientSession, source: PrometheusSource) -> None:
        self._session = session
        self._source = source
        self._timeout = aiohttp.ClientTimeout(total=source.timeout_s)

    def queries(self, namespace: str, pods: list[str]) -> dict[str, str]:
        src = self._source
        regex = "|".join(p.replace(".", "\\\\.") for p in pods)
        sel = f'{{{src.namespace_label}="{namespace}",{src.pod_label}=~"{regex}"}}'
        by = f"by ({src.pod_label})"
        return {
            "kv_usage": f"max {by} ({KV_USAGE}{sel})",
            "queue": f"sum {by} ({WAITING}{sel})",
            "running": f"sum {by} ({RUNNING}{sel})",
            "gpu_util": f"avg {by} ({GPU_UTIL}{sel})",
            "tokens_per_s": f"sum {by} (rate({GEN_TOKENS}_total{sel}[{src.window}]))",
            "ttft_p90": f"histogram_quantile(0.9, sum by (le) (rate({TTFT}_bucket{sel}[{src.window}])))",
        }

    async def collect(self, namespace: str, pods: list[str]) -> Signals:
        """Signals of `pods`; raises PrometheusError when the server cannot answer."""
        if not pods:
            return Signals(sampled=0)
        names = list(self.queries(namespace, pods))
        results = await asyncio.gather(*(self.query(q) for q in self.queries(namespace, pods).values()))
        per_pod = dict(zip(names, results))
        label = self._source.pod_label
        sampled = {r["metric"].get(label) for k in ("kv_usage", "queue", "running") for r in per_pod[k]}
        sampled.discard(None)

        def mean(key: str) -> float | None:
            vs = [v for v in (_value(r) for r in per_pod[key]) if v is not None]
            return sum(vs) / len(vs) if vs else None

        ttft = [v for v in (_value(r) for r in per_pod["ttft_p90"]) if v is not None]
        load: dict[str, float] = {}
        for key in ("running", "queue"):
            for r in per_pod[key]:
                pod = r["metric"].get(label)
                if pod is not None:
                    load[pod] = load.get(pod, 0.0) + (_value(r) or 0.0)
        return Signals(
            sampled=len(sampled),
            kv_usage=mean("kv_usage"),
            queue=mean("queue"),
            running=mean("running"),
            gpu_util=mean("gpu_util"),
            tokens_per_s=mean("tokens_per_s"),
            ttft_p90=ttft[0] if ttft else None,
            load_by_pod=load,
        )

    async def query(self, promql: str) -> list[dict]:
        url = self._source.url.rstrip("/") + "/api/v1/query"
        try:
            async with self._session.get(url, params={"query": promql}, timeout=self._timeout) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            raise PrometheusError(f"query to {url} failed: {e!r}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"prometheus rejected {promql!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise PrometheusError(f"expected an instant vector for {promql!r}, got {data['resultType']}")
        return data["result"]


def _value(result: dict) -> float | None:
    v = float(result["value"][1])
    return None if math.isnan(v) or math.isinf(v) else v
