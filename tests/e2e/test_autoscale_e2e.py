"""End to end: the operator's built-in autoscaler on the local control plane,
driven by real worker processes serving SmolLM2 on CPU.

kwok plays the kubelet for scheduling and pod IPs (loopback addresses);
localcluster.podworkers plays the rest of it: for each Running pod of the fms
it starts `fms-worker serve` bound to the pod's IP with the ConfigMap the
operator rendered, and on pod deletion stops routing to it and sends SIGTERM
so the worker drains. This test plays the Service: it routes load to ready
workers. The operator sees only ordinary pods and their metrics endpoints.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from localcluster.podworkers import PodWorkers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

INTERVAL_S = 5
DOWN_WINDOW_S = 20
# maxNumSeqs is 2, so with 20 clients a replica runs 2 and queues the rest:
# one replica queues ~18 (saturation ~2.2), two queue ~8 each (~1.0), both
# above the 0.7 target, so the service holds 2 replicas for as long as the
# load lasts and only the end of the load can scale it down.
CLIENTS = 20
BIN = Path(sys.executable).parent


async def generate_load(fleet: PodWorkers, http: httpx.AsyncClient, stop: asyncio.Event, failures: list, model: str,
                        served: collections.Counter) -> int:
    done = 0
    rr = itertools.count()

    async def client() -> None:
        nonlocal done
        while not stop.is_set():
            targets = fleet.routable()
            if not targets:
                await asyncio.sleep(0.2)
                continue
            w = targets[next(rr) % len(targets)]
            body = {"model": model, "prompt": "Write a short poem about the sea.", "max_tokens": 24, "temperature": 0}
            try:
                r = await http.post(f"{w.url}/v1/completions", json=body, timeout=300)
                if r.status_code != 200:
                    failures.append((w.url, r.status_code, r.text[:200]))
                else:
                    served[w.pod] += 1
                    done += 1
            except httpx.HTTPError as e:
                failures.append((w.url, type(e).__name__, str(e)))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return done


def fms_manifest(name: str, model_dir: Path) -> dict:
    return {
        "apiVersion": "serving.fms.dev/v1alpha1", "kind": "FoundationModelService", "metadata": {"name": name},
        "spec": {
            "model": {"source": {"local": {"path": str(model_dir)}}},
            "replicas": 1,
            "precision": {"dtype": "float32"},
            "batching": {"maxNumSeqs": 2},
            "resources": {"cpu": "1", "memory": "2Gi"},
            "worker": {"drainSeconds": 30},
            "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 2, "metric": "saturation", "target": 0.7,
                            "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": DOWN_WINDOW_S},
        },
    }


@pytest.fixture
def operator(cluster, namespace, repo_root, tmp_path):
    cluster.kubectl("apply", "--server-side", "-f", str(repo_root / "crds/serving.fms.dev_foundationmodelservices.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/foundationmodelservices.serving.fms.dev", "--timeout=60s")
    log = tmp_path / "operator.log"
    env = {**cluster.env, "FMS_AUTOSCALE_INTERVAL_SECONDS": str(INTERVAL_S)}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "fms-operator"), "-n", namespace, "--liveness", "", "--metrics-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    yield log
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_autoscale_up_under_load_and_down_after(cluster, namespace, operator, smollm2_dir, tmp_path):
    name = "chat"
    # Room for exactly maxReplicas: the budget path runs without capping this test.
    cluster.kubectl("annotate", "namespace", namespace, "serving.fms.dev/gpu-budget=2")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(fms_manifest(name, smollm2_dir)))
    fleet = PodWorkers(cluster.kubectl, namespace, name, tmp_path, bind_to_parent=True)
    served_by: collections.Counter = collections.Counter()  # requests each worker (by pod) served

    def replicas() -> int:
        out = cluster.kubectl("-n", namespace, "get", "fms", name, "-o", "jsonpath={.spec.replicas}")
        return int(out.stdout)

    async def until(what: str, check, timeout: float) -> float:
        start = time.monotonic()
        while not check():
            assert time.monotonic() - start < timeout, f"{what} not within {timeout} s; operator log:\n" + operator.read_text()[-3000:]
            await fleet.sync(http)
            await asyncio.sleep(0.5)
        return time.monotonic()

    failures: list = []
    async with httpx.AsyncClient() as http:
        try:
            await until("first worker ready", lambda: len(fleet.routable()) == 1, 300)
            assert replicas() == 1

            stop = asyncio.Event()
            t_load = time.monotonic()
            load = asyncio.create_task(generate_load(fleet, http, stop, failures, name, served_by))
            t_up = await until("scale-up to 2", lambda: replicas() == 2, 120)
            await until("second worker serving", lambda: sum(served_by[w.pod] > 0 for w in fleet.routable()) == 2, 300)
            stop.set()
            t_stop = time.monotonic()  # no new requests from here on
            served = await load
            t_idle = time.monotonic()  # the last requests are done

            t_down = await until("scale-down to 1", lambda: replicas() == 1, DOWN_WINDOW_S + 6 * INTERVAL_S)
            await until("removed worker drained and exited",
                        lambda: sum(w.proc.poll() is None for w in fleet.workers.values()) == 1, 120)
        finally:
            fleet.stop(grace_s=0)

    print(f"scale-up {t_up - t_load:.1f} s after load start; scale-down {t_down - t_stop:.1f} s after load stop "
          f"({t_down - t_idle:.1f} s after the last request); "
          f"{served} requests served")
    assert failures == [], failures
    assert served > 0
    assert t_up - t_load <= 2 * INTERVAL_S + 3, "scale-up took longer than two evaluation periods"
    # The round before the stop saw the load, so its recommendation holds 2
    # replicas for a full down window; once idle, the window plus a round or two.
    assert t_down - t_stop >= DOWN_WINDOW_S - INTERVAL_S
    assert t_down - t_idle <= DOWN_WINDOW_S + 3 * INTERVAL_S
    drained = [(pod, w) for pod, w in fleet.workers.items() if w.draining]
    assert len(drained) == 1 and drained[0][1].proc.returncode == 0, [w.proc.returncode for _, w in drained]

    status = json.loads(cluster.kubectl("-n", namespace, "get", "fms", name, "-o", "json").stdout)["status"]
    assert status["lastScale"]["desired"] == 1 and status["lastScale"]["target"] == 0.7
    events = cluster.kubectl("-n", namespace, "get", "events", "--field-selector", "reason=Scaled", "-o", "json")
    messages = [e["message"] for e in json.loads(events.stdout)["items"]]
    print("\n".join(messages))
    assert any("1 -> 2 replicas on saturation" in m for m in messages), messages
    # The pod the operator marked (deletion cost) is the one the ReplicaSet removed.
    removed = f"Least loaded, removed first: {drained[0][0]}."
    assert any("2 -> 1 replicas on saturation" in m and removed in m for m in messages), messages
