"""Benchmark: create N FoundationModelService objects and time until all have Deployments.

    .venv/bin/python bench/operator_scale.py [--count 500] [--kubeconfig PATH]

Starts a local control plane (hack/localcluster, kwok fleet of hack/fleet.yaml)
unless --kubeconfig is given, runs the operator as a subprocess, creates the
objects from 8 client threads, and prints: time until every object has its
Deployment, time until every status is written, and the operator's peak RSS
(VmHWM). Targets on the 2-core dev machine: under 60 s and 200 MiB for 500.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "tests" / "integration" / "operator"))

from operator_harness import free_port  # noqa: E402

GROUP, VERSION, PLURAL = "serving.fms.dev", "v1alpha1", "foundationmodelservices"


def body(i: int) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FoundationModelService", "metadata": {"name": f"m{i:04d}"},
            "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}, "resources": {"gpuProduct": "NVIDIA-L4"}}}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_objects(list_fn, namespace: str) -> int:
    """Count with limit=1 + remainingItemCount: listing 500 full Deployments every second would load
    the API server as much as the operator does. No label selector: the API server omits
    remainingItemCount for selected lists (the bench namespace holds only the operator's objects)."""
    page = list_fn(namespace, limit=1)
    return len(page.items) + (page.metadata.remaining_item_count or 0)


def run(kubeconfig: Path, count: int, namespace: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    kubectl = os.environ.get("KUBECTL", "kubectl")
    subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / f"{GROUP}_{PLURAL}.yaml")], env=env, check=True)
    subprocess.run([kubectl, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"], env=env, check=True)
    subprocess.run([kubectl, "create", "namespace", namespace], env=env, check=True)
    kubernetes.config.load_kube_config(str(kubeconfig))
    custom, apps = kubernetes.client.CustomObjectsApi(), kubernetes.client.AppsV1Api()

    log = open(Path(tempfile.gettempdir()) / "fms-operator-bench.log", "w")
    port = free_port()
    op = subprocess.Popen([sys.executable, "-m", "fms_operator", "--metrics-port", str(port), "--liveness", ""],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)  # operator start-up (imports, watches) is not part of the figure
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(i)), range(count)))
        created = time.monotonic() - start
        deployed = statused = None
        while time.monotonic() - start < 600 and statused is None:
            time.sleep(1.0)
            if deployed is None:
                if count_objects(apps.list_namespaced_deployment, namespace) >= count:
                    deployed = time.monotonic() - start
            if deployed is not None:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
                if sum(1 for o in items if (o.get("status") or {}).get("observedGeneration")) >= count:
                    statused = time.monotonic() - start
        print(f"objects: {count}; created in {created:.1f} s")
        print(f"all Deployments present after: {deployed if deployed is None else round(deployed, 1)} s")
        print(f"all statuses written after:    {statused if statused is None else round(statused, 1)} s")
        print(f"operator peak RSS (VmHWM):     {peak_rss_mib(op.pid):.0f} MiB")
        print(f"operator CPU time:             {cpu_seconds(op.pid):.1f} s")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(("fms_operator_reconciles_total", "fms_operator_writes_total", "fms_operator_reconcile_duration_seconds_sum",
                                "fms_operator_reconcile_duration_seconds_count", "fms_operator_reconcile_errors_total")):
                print("  " + line)
    finally:
        op.terminate()
        op.wait(timeout=30)
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--kubeconfig", type=Path, default=None, help="use this cluster instead of starting one")
    p.add_argument("--namespace", default=f"bench-{int(time.time())}")
    args = p.parse_args()
    if args.kubeconfig:
        run(args.kubeconfig, args.count, args.namespace)
        return 0
    import localcluster

    state = Path(tempfile.mkdtemp(prefix="fms-bench-cluster-"))
    cluster = localcluster.up(state, bind_to_parent=True)
    os.environ.setdefault("KUBECTL", str(cluster.kubectl_path))
    try:
        run(cluster.kubeconfig, args.count, args.namespace)
    finally:
        localcluster.down(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
