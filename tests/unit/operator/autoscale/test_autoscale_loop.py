"""Autoscaler.evaluate end to end on CPU: pod manifests -> real scrapes of
aiohttp servers on 127.0.0.1 -> decision -> deletion costs; plus the pure
helpers it uses (pod views, budgets, settings)."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web

from fms_operator.api.resource import FMS
from fms_operator.autoscale.budget import BudgetError, budget_from_annotations, namespace_budget
from fms_operator.autoscale.decision import Budget
from fms_operator.autoscale.loop import Autoscaler, builtin, policy_for
from fms_operator.autoscale.pods import PodView, removal_order, scrape_targets
from fms_operator.autoscale.settings import AutoscaleSettings, SettingsError

from test_autoscale_signals import metrics_text


def fms_body(replicas=2, mode="builtin", metric="queueDepth", target=4.0, tensor=1, **autoscaling) -> dict:
    return {
        "metadata": {"name": "chat", "namespace": "team-a", "uid": "uid-chat", "generation": 1},
        "spec": {
            "model": {"source": {"local": {"path": "/models/smollm2"}}},
            "replicas": replicas,
            "parallelism": {"tensor": tensor},
            "autoscaling": {"mode": mode, "minReplicas": 1, "maxReplicas": 8, "metric": metric, "target": target,
                            "scaleDownStabilizationSeconds": 0, **autoscaling},
        },
    }


def pod(name: str, port: int, ready: bool = True, ip: str = "127.0.0.1", deleting: bool = False) -> dict:
    meta = {"name": name, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "worker", "ports": [{"name": "http", "containerPort": 1},
                                                             {"name": "metrics", "containerPort": port}]}]},
        "status": {"phase": "Running" if ready else "Pending", "podIP": ip if ready else None,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@pytest.fixture
async def workers():
    """Two metrics endpoints on their own ports; texts settable per pod."""
    texts = {"chat-a": metrics_text(waiting=12, running=4), "chat-b": metrics_text(waiting=4, running=2)}
    runners, ports = [], {}
    for name in texts:
        async def handler(request: web.Request, name: str = name) -> web.Response:
            return web.Response(text=texts[name])

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports[name] = runner.addresses[0][1]
    yield ports, texts
    for r in runners:
        await r.cleanup()


async def test_evaluate_scales_up_on_queue_depth(workers):
    ports, _ = workers
    fms = FMS.from_body(fms_body(replicas=2))
    pods = [pod(n, p) for n, p in ports.items()]
    async with ClientSession() as session:
        ev = await Autoscaler(AutoscaleSettings(), session).evaluate(fms, pods)
    # waiting 12 and 4: mean 8 per replica vs target 4 -> 2 x 2 = 4 replicas.
    assert ev.decision.desired == 4 and ev.announce
    assert ev.decision.inputs["metric"] == "queueDepth"
    assert ev.deletion_costs == {}
    assert "queueDepth=8.0" in ev.event_message()
    status = ev.last_scale("2026-01-01T00:00:00Z")
    assert status["desired"] == 4 and status["value"] == 8.0 and status["target"] == 4.0


async def test_evaluate_warming_pod_and_unready_pod_are_not_scraped(workers):
    ports, _ = workers
    fms = FMS.from_body(fms_body(replicas=3))
    pods = [pod("chat-a", ports["chat-a"]), pod("chat-b", ports["chat-b"], deleting=True), pod("chat-c", 1, ready=False)]
    async with ClientSession() as session:
        ev = await Autoscaler(AutoscaleSettings(), session).evaluate(fms, pods)
    # Only chat-a answers (12 waiting -> ratio 3 -> wants 3), chat-c is on its way: 3 already.
    assert ev.signals.sampled == 1
    assert ev.decision.desired == 3 and not ev.decision.changed


async def test_evaluate_scale_down_marks_least_loaded_pod(workers):
    ports, texts = workers
    texts["chat-a"] = metrics_text(waiting=0, running=3)
    texts["chat-b"] = metrics_text(waiting=0, running=1)
    fms = FMS.from_body(fms_body(replicas=2, metric="runningRequests", target=8))
    async with ClientSession() as session:
        ev = await Autoscaler(AutoscaleSettings(), session, clock=lambda: 1000.0).evaluate(
            fms, [pod(n, p) for n, p in ports.items()])
    assert ev.decision.desired == 1
    assert ev.deletion_costs == {"chat-b": "-1000"}
    assert ev.event_message().endswith("Least loaded, removed first: chat-b.")


async def test_evaluate_budget_caps(workers):
    ports, _ = workers
    fms = FMS.from_body(fms_body(replicas=2, tensor=2))
    async with ClientSession() as session:
        ev = await Autoscaler(AutoscaleSettings(), session).evaluate(
            fms, [pod(n, p) for n, p in ports.items()], Budget(limit=8, used_by_others=2))
    assert ev.decision.desired == 3 and ev.decision.capped and "GPU budget 8" in ev.decision.reason


def test_builtin_and_policy():
    assert builtin(FMS.from_body(fms_body()).spec)
    assert not builtin(FMS.from_body(fms_body(mode="external")).spec)
    p = policy_for(FMS.from_body(fms_body(tensor=4, minReplicas=0)).spec, AutoscaleSettings(max_step_up=2))
    assert (p.gpus_per_replica, p.min_replicas, p.max_step_up, p.scale_down_window_s) == (4, 1, 2, 0)


def test_pod_views_and_targets():
    views = [PodView.from_manifest(pod("a", 9090)), PodView.from_manifest(pod("b", 9090, ready=False)),
             PodView.from_manifest(pod("c", 9090, ip="fd00::1"))]
    assert [t.url for t in scrape_targets(views)] == ["http://127.0.0.1:9090/metrics", "http://[fd00::1]:9090/metrics"]
    no_metrics_port = pod("d", 9090)
    no_metrics_port["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    assert PodView.from_manifest(no_metrics_port).metrics_port == 8000


def test_removal_order():
    assert removal_order({"a": 5, "b": 0, "c": 0}, 2) == {"b": "-1000", "c": "-999"}
    assert removal_order({"a": 5}, 0) == {}


def test_namespace_budget():
    bodies = [fms_body(replicas=2, tensor=2), {"metadata": {"uid": "other"}, "spec": {"replicas": 3, "parallelism": {"tensor": 4}}}]
    assert namespace_budget("ns", {"serving.fms.dev/gpu-budget": "16"}, bodies, "uid-chat") == Budget(16, 12)
    assert namespace_budget("ns", {}, bodies, "uid-chat") is None
    with pytest.raises(BudgetError, match='whole number of GPUs, e.g. "16"'):
        budget_from_annotations("ns", {"serving.fms.dev/gpu-budget": "lots"})


def test_settings_from_env():
    s = AutoscaleSettings.from_env({"FMS_AUTOSCALE_INTERVAL_SECONDS": "5", "FMS_AUTOSCALE_SOURCE": "prometheus",
                                    "FMS_PROMETHEUS_URL": "http://prom:9090"})
    assert s.interval_s == 5 and s.prometheus is not None and s.prometheus.url == "http://prom:9090"
    with pytest.raises(SettingsError, match="needs FMS_PROMETHEUS_URL"):
        AutoscaleSettings.from_env({"FMS_AUTOSCALE_SOURCE": "prometheus"})
    with pytest.raises(SettingsError, match="FMS_AUTOSCALE_MAX_STEP_UP='x' is not a int"):
        AutoscaleSettings.from_env({"FMS_AUTOSCALE_MAX_STEP_UP": "x"})
    with pytest.raises(SettingsError, match="use scrape"):
        AutoscaleSettings.from_env({"FMS_AUTOSCALE_SOURCE": "statsd"})
