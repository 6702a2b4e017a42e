"""The last step of `make demo`: a real chat completion through what the operator created.

For one sample fms it waits for Running pods of the operator's Deployment,
starts a real worker per pod (localcluster.podworkers: the ConfigMap's
worker.yaml with model.path pointed at the prepared weights, on CPU in float32
since the fleet's GPUs are simulated), waits for /ready, takes the address
behind the Service (its selector and targetPort) and sends POST /v1/chat/completions
there. The workers are recorded in the cluster's state folder, so they keep
running until `make down` (localcluster down) stops them with the cluster.

    python hack/chat_demo.py --dir .cache/cluster --name smollm2 --model-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localcluster import ClusterError, handle  # noqa: E402
from localcluster.commands import Layout  # noqa: E402
from localcluster import process  # noqa: E402
from localcluster.podworkers import LocalRun, PodWorkers, process_name  # noqa: E402

PROMPT = "What is the capital of France? Answer in one sentence."


class DemoError(RuntimeError):
    pass


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


async def start_workers(workers: PodWorkers, timeout_s: float) -> None:
    """Until every Running pod of the fms has a ready worker (and there is at least one)."""
    deadline = time.monotonic() + timeout_s
    started: set[str] = set()
    async with httpx.AsyncClient() as http:
        while True:
            await workers.sync(http)
            for w in workers.workers.values():
                if w.pod not in started:
                    started.add(w.pod)
                    print(f"  pod {w.pod}: started fms-worker on {w.url} (log: {w.log})", flush=True)
            if crashed := workers.exited():
                w = crashed[0]
                raise DemoError(f"the worker of pod {w.pod} exited ({w.proc.returncode}); its log ends:\n{_tail(w.log)}")
            if workers.workers and all(w.ready for w in workers.workers.values()):
                return
            if time.monotonic() > deadline:
                pods = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in workers.pods()}
                raise DemoError(f"no ready worker within {timeout_s:.0f} s; pods {pods or 'none yet'}, "
                                f"workers {[(w.pod, w.ready) for w in workers.workers.values()]}")
            await asyncio.sleep(1)


def service_endpoints(service: dict, pods: list[dict], port_name: str = "http") -> list[tuple[str, str, int]]:
    """(pod, ip, port) for each ready pod the Service selects, with the named targetPort resolved.

    What the EndpointSlice controller computes; on this cluster it cannot store
    the result, because the API refuses loopback addresses in EndpointSlices.
    """
    selector = service["spec"].get("selector") or {}
    port = next(p for p in service["spec"]["ports"] if p.get("name") == port_name)
    target = port.get("targetPort", port["port"])
    out = []
    for pod in pods:
        labels, status = pod["metadata"].get("labels") or {}, pod.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        if not ready or not status.get("podIP") or pod["metadata"].get("deletionTimestamp"):
            continue
        if isinstance(target, int):
            number = target
        else:
            ports = [cp for c in pod["spec"]["containers"] for cp in c.get("ports") or []]
            number = next((cp["containerPort"] for cp in ports if cp.get("name") == target), None)
            if number is None:
                continue
        out.append((pod["metadata"]["name"], status["podIP"], number))
    return out


def show(kubectl, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}")
    print(kubectl(*args).stdout.rstrip())


def chat(url: str, model: str) -> tuple[dict, float, list[str]]:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 48, "temperature": 0}
    curl = ["curl", "-s", f"{url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", json.dumps(body)]
    start = time.monotonic()
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    if r.status_code != 200:
        raise DemoError(f"POST {url}/v1/chat/completions answered {r.status_code}: {r.text[:500]}")
    return r.json(), time.monotonic() - start, curl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True, help="the cluster's state folder")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--name", default="smollm2", help="the FoundationModelService to serve")
    ap.add_argument("--model-dir", type=Path, required=True, help="local weights replacing the pod's model.path")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for ready workers")
    args = ap.parse_args(argv)
    state = args.dir.resolve()
    cluster = handle(Layout(state))
    kubectl, ns, name = cluster.kubectl, args.namespace, args.name
    # Two threads: the demo machine may have only two cores, and nothing else is serving.
    workers = PodWorkers(kubectl, ns, name, state, LocalRun(model_dir=args.model_dir.resolve(), threads=2))
    try:
        # A rerun on the same cluster replaces the workers an earlier run left (they hold the pod IPs' ports).
        process.stop(Layout(state).pids, names={process_name(p["metadata"]["name"]) for p in workers.pods()})
        print(f"Starting a real fms-worker for each Running pod of fms/{name} (CPU, float32, {args.model_dir.name}) ...")
        t0 = time.monotonic()
        asyncio.run(start_workers(workers, args.timeout))
        print(f"  ready after {time.monotonic() - t0:.0f} s\n")
        show(kubectl, "-n", ns, "get", "deployment,pods", "-l", f"serving.fms.dev/name={name}", "-o", "wide")
        print()
        show(kubectl, "-n", ns, "get", "service", name, "-o", "wide")
        print()
        service = json.loads(kubectl("-n", ns, "get", "service", name, "-o", "json").stdout)
        endpoints = service_endpoints(service, workers.pods())
        if not endpoints:
            raise DemoError(f"Service {ns}/{name} selects no ready pod")
        pod, ip, port = endpoints[0]
        print(f"Service {ns}/{name} -> endpoint {ip}:{port} (pod {pod}). Kubernetes refuses loopback addresses in\n"
              f"EndpointSlices, so `kubectl get endpointslices` stays empty on this cluster; the demo resolves the\n"
              f"Service's selector and targetPort the way the EndpointSlice controller does.\n")
        url = f"http://{ip}:{port}"
        model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        print(f"POST {url}/v1/chat/completions  (model {model!r})")
        print(f"  user: {PROMPT}")
        reply, seconds, curl = chat(url, model)
        usage = reply.get("usage") or {}
        print(f"  assistant: {reply['choices'][0]['message']['content'].strip()}")
        print(f"  ({usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion tokens in "
              f"{seconds:.1f} s, finish_reason {reply['choices'][0].get('finish_reason')})\n")
        print("Ask it yourself:")
        print("  " + shlex.join(curl) + "\n")
        print("Worker logs: " + ", ".join(str(w.log) for w in workers.workers.values()))
        return 0
    except (DemoError, ClusterError, httpx.HTTPError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
