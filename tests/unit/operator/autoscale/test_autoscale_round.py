"""run_round's apply step: what it writes to the API, in which order.

The Kubernetes side is a recorder standing in for AutoscaleKube (the real
calls run in tests/e2e/test_autoscale_e2e.py); the metrics side is real.
"""

from __future__ import annotations

import pytest
from aiohttp import ClientSession

from fms_operator.autoscale.loop import Autoscaler
from fms_operator.autoscale.round import run_round
from fms_operator.autoscale.settings import AutoscaleSettings

from test_autoscale_loop import fms_body, pod, workers  # noqa: F401  (workers is a fixture)
from test_autoscale_signals import metrics_text


class RecordingKube:
    def __init__(self, pods: list[dict], annotations: dict[str, str] | None = None, others: list[dict] | None = None):
        self._pods, self._annotations, self._others = pods, annotations or {}, others or []
        self.calls: list[tuple] = []

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        self.calls.append(("list_pods", namespace, selector))
        return self._pods

    def list_fms(self, namespace: str) -> list[dict]:
        return self._others

    def namespace_annotations(self, namespace: str) -> dict[str, str]:
        return self._annotations

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(("scale", name, replicas))

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.calls.append(("annotate_pod", name, annotations))

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        self.calls.append(("patch_status", name, status["lastScale"]["desired"]))


async def test_scale_down_marks_pod_before_scaling(workers):  # noqa: F811
    ports, texts = workers
    texts["chat-a"] = metrics_text(waiting=0, running=0)
    texts["chat-b"] = metrics_text(waiting=0, running=1)
    kube = RecordingKube([pod(n, p) for n, p in ports.items()])
    events: list[tuple] = []
    body = fms_body(replicas=2, metric="runningRequests", target=8)
    async with ClientSession() as session:
        ev = await run_round(body, kube, Autoscaler(AutoscaleSettings(), session, clock=lambda: 0.0),
                             lambda *e: events.append(e))
    assert ev is not None and ev.decision.desired == 1
    assert kube.calls == [
        ("list_pods", "team-a", "serving.fms.dev/name=chat"),
        ("annotate_pod", "chat-a", {"controller.kubernetes.io/pod-deletion-cost": "-1000"}),
        ("scale", "chat", 1),
        ("patch_status", "chat", 1),
    ]
    assert [e[:2] for e in events] == [("Normal", "Scaled")]


async def test_budget_cap_warns_once_and_holds(workers):  # noqa: F811
    ports, _ = workers  # waiting 12 and 4 vs target 4: wants 4
    kube = RecordingKube([pod(n, p) for n, p in ports.items()], {"serving.fms.dev/gpu-budget": "2"})
    events: list[tuple] = []
    async with ClientSession() as session:
        autoscaler = Autoscaler(AutoscaleSettings(), session)
        for _ in range(2):
            await run_round(fms_body(replicas=2), kube, autoscaler, lambda *e: events.append(e))
    assert not [c for c in kube.calls if c[0] == "scale"]
    assert [e[:2] for e in events] == [("Warning", "ScaleCapped")]
    assert "GPU budget 2" in events[0][2]


async def test_invalid_budget_is_reported_and_ignored(workers):  # noqa: F811
    ports, _ = workers
    kube = RecordingKube([pod(n, p) for n, p in ports.items()], {"serving.fms.dev/gpu-budget": "many"})
    events: list[tuple] = []
    async with ClientSession() as session:
        ev = await run_round(fms_body(replicas=2), kube, Autoscaler(AutoscaleSettings(), session),
                             lambda *e: events.append(e))
    assert ev.decision.desired == 4
    assert ("Warning", "InvalidGPUBudget") in [e[:2] for e in events]


@pytest.mark.parametrize("autoscaling", [{"mode": "external"}, None])
async def test_external_mode_and_no_autoscaling_stay_out_of_the_way(autoscaling):
    body = fms_body()
    if autoscaling is None:
        del body["spec"]["autoscaling"]
    else:
        body["spec"]["autoscaling"].update(autoscaling)
    kube = RecordingKube([])
    async with ClientSession() as session:
        assert await run_round(body, kube, Autoscaler(AutoscaleSettings(), session), lambda *e: None) is None
    assert kube.calls == []
