"""One autoscaling evaluation of one fms: pods -> signals -> decision.

No Kubernetes calls here: the round (round.py) lists pods and applies the
result; this class owns the collectors and the per-fms memory (the
recommendation history the stabilization windows read), so a benchmark or a
test can drive it with plain pod manifests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from fms_operator.api.models import FoundationModelServiceSpec
from fms_operator.api.resource import FMS

from .collector_prometheus import PrometheusCollector, PrometheusError
from .collector_scrape import ScrapeCollector
from .decision import Budget, Decision, Observation, Policy, Recommendation, decide, with_inputs
from .pods import PodView, removal_order, scrape_targets
from .settings import AutoscaleSettings
from .signals import Signals, value_of

log = logging.getLogger(__name__)


def builtin(spec: FoundationModelServiceSpec) -> bool:
    """External mode hands spec.replicas to an HPA or KEDA via the scale subresource."""
    return spec.autoscaling is not None and spec.autoscaling.mode == "builtin"


def policy_for(spec: FoundationModelServiceSpec, settings: AutoscaleSettings) -> Policy:
    a = spec.autoscaling
    assert a is not None
    return Policy(
        # Nothing reports metrics at zero replicas, so the loop could never wake
        # a fleet it put to sleep: it keeps one; scale-to-zero is external mode's.
        min_replicas=max(1, a.min_replicas),
        max_replicas=max(1, a.max_replicas),
        target=a.target,
        tolerance=settings.tolerance,
        scale_up_window_s=a.scale_up_stabilization_seconds,
        scale_down_window_s=a.scale_down_stabilization_seconds,
        max_step_up=settings.max_step_up,
        max_step_down=settings.max_step_down,
        gpus_per_replica=spec.gpus_per_replica,
    )


@dataclass(frozen=True)
class Evaluation:
    fms: str
    metric: str
    signals: Signals
    decision: Decision
    # controller.kubernetes.io/pod-deletion-cost per pod, set before a scale-down.
    deletion_costs: dict[str, str]
    # Worth an Event: replicas changed, or a cap (max, budget) started to bite.
    announce: bool = False

    def last_scale(self, when: str) -> dict[str, Any]:
        """status.lastScale (camelCase, as the CRD stores it)."""
        d = self.decision
        return {"value": d.inputs["observed"], "target": d.inputs["target"], "current": d.inputs["current"],
                "desired": d.desired, "reason": d.reason[:1024], "time": when}

    def event_message(self) -> str:
        d = self.decision
        signals = ", ".join(f"{k}={v}" for k, v in self.signals.as_inputs().items() if v is not None)
        head = f"{d.inputs['current']} -> {d.desired} replicas on {self.metric}"
        removing = f" Least loaded, removed first: {', '.join(self.deletion_costs)}." if self.deletion_costs else ""
        return f"{head}: {d.reason}. Inputs: {signals or 'none'}.{removing}"[:1024]


@dataclass
class _Memory:
    since: float
    history: tuple[Recommendation, ...] = ()
    capped: bool = False


class Autoscaler:
    def __init__(
        self,
        settings: AutoscaleSettings,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._scrape = ScrapeCollector(session, settings.scrape_timeout_s, clock, settings.max_connections)
        self._prometheus = PrometheusCollector(session, settings.prometheus) if settings.prometheus else None
        self._clock = clock
        self._memory: dict[str, _Memory] = {}

    async def evaluate(self, fms: FMS, pods: list[Mapping[str, Any]], budget: Budget | None = None) -> Evaluation:
        spec = fms.spec
        assert spec.autoscaling is not None
        metric = spec.autoscaling.metric
        views = [PodView.from_manifest(p) for p in pods]
        signals, error = await self._collect(fms, views)
        now = self._clock()
        memory = self._memory.setdefault(fms.uid, _Memory(since=now))
        refs = {"runningRequests": float(spec.batching.max_num_seqs)}
        observed = value_of(signals, metric, refs)
        obs = Observation(current=spec.replicas, sampled=signals.sampled if observed is not None else 0, value=observed)
        decision = decide(policy_for(spec, self.settings), obs, memory.history, now, budget, memory.since)
        memory.history = decision.history
        decision = with_inputs(decision, metric=metric, error=error)
        removing = max(0, spec.replicas - decision.desired)
        costs = removal_order(signals.load_by_pod, removing) if removing else {}
        announce = decision.changed or (decision.capped and not memory.capped)
        memory.capped = decision.capped
        return Evaluation(f"{fms.namespace}/{fms.name}", metric, signals, decision, costs, announce)

    def forget(self, uid: str) -> None:
        self._memory.pop(uid, None)
        self._scrape.forget(uid)

    async def _collect(self, fms: FMS, pods: list[PodView]) -> tuple[Signals, str | None]:
        if self._prometheus is None:
            return await self._scrape.collect(fms.uid, scrape_targets(pods)), None
        try:
            return await self._prometheus.collect(fms.namespace, [p.name for p in pods if p.serving]), None
        except PrometheusError as e:
            log.warning("autoscaler %s/%s: %s", fms.namespace, fms.name, e)
            return Signals(sampled=0), str(e)[:200]
