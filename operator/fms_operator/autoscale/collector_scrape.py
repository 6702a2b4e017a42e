"""Collection path 1: scrape every Ready pod's /metrics directly.

All pods of all fms objects are scraped concurrently over one shared aiohttp
session (`new_session`); a semaphore, not the connector, bounds the scrapes
in flight: aiohttp's connector-wide limit rescans every waiting host on each
release, quadratic with 1,500 distinct pod addresses. A pod that times out,
refuses, or answers garbage simply has no sample this round; the decision
treats it as capacity without metrics, never as an idle replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from .sample import MetricsParseError, PodSample, parse_metrics_text
from .signals import Signals, from_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScrapeTarget:
    pod: str
    url: str


def new_session(timeout_s: float = 2.0) -> aiohttp.ClientSession:
    """The operator's one HTTP client for metrics: no connector-wide limit,
    keep-alive so the next round reuses the connection to each pod."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=4, keepalive_timeout=60.0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s,
                                                                                   sock_read=timeout_s))


class ScrapeCollector:
    """Keeps each fms's previous samples, so rates and the TTFT quantile cover
    the time between two evaluations."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 256,
    ) -> None:
        self._session = session
        self._slots = asyncio.Semaphore(max_in_flight)
        # Per socket, not total: with hundreds of pods queued behind the
        # connector's limit, waiting for a free connection is not the pod's fault.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._clock = clock
        self._previous: dict[str, dict[str, PodSample]] = {}

    async def collect(self, key: str, targets: list[ScrapeTarget]) -> Signals:
        results = await asyncio.gather(*(self.scrape(t) for t in targets))
        samples = [s for s in results if s is not None]
        signals = from_samples(self._previous.get(key, {}), samples)
        # Pods that vanished drop out; a pod whose scrape failed keeps its
        # older sample, so its next rate spans the gap instead of restarting.
        kept = {p: s for p, s in self._previous.get(key, {}).items() if p in {t.pod for t in targets}}
        self._previous[key] = kept | {s.pod: s for s in samples}
        return signals

    def forget(self, key: str) -> None:
        self._previous.pop(key, None)

    async def scrape(self, target: ScrapeTarget) -> PodSample | None:
        try:
            async with self._slots, self._session.get(target.url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    log.debug("scrape %s: HTTP %s", target.url, resp.status)
                    return None
                text = await resp.text()
                at = self._clock()
            return parse_metrics_text(target.pod, at, text)
        except (aiohttp.ClientError, asyncio.TimeoutError, MetricsParseError, UnicodeDecodeError) as e:
            log.debug("scrape %s failed: %r", target.url, e)
            return None
