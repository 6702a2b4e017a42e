"""Real fms-worker processes for the pods of one FoundationModelService.

kwok plays the kubelet only as far as scheduling and pod IPs (loopback
addresses). PodWorkers plays the rest of it for one fms: for each Running pod
it starts `fms-worker serve` bound to the pod's IP with the worker.yaml the
operator rendered into the ConfigMap, checks /ready, and when a pod goes away
it marks the worker draining (endpoints drop the pod first) and sends SIGTERM
a moment later (then preStop ends), so the worker drains like in a real pod.

The processes are recorded by PID in a state folder (see process.py):
with the cluster's own folder, `localcluster down` stops them with the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from . import process
from .commands import Layout

NAME_LABEL = "serving.fms.dev/name"  # the operator's selector label (fms_operator.render.meta)
CONFIG_KEY = "worker.yaml"
# The Service's readiness view trails a pod's deletion by about this long before the kubelet's SIGTERM.
DRAIN_DELAY_S = 2.0

Kubectl = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class LocalRun:
    """How a pod's worker runs on this machine instead of in its container."""

    # The rendered model.path is the pod's cache volume; point it at local weights instead.
    model_dir: Path | None = None
    device: str = "cpu"
    dtype: str = "float32"
    cpu_kv_cache_bytes: int = 64 << 20
    threads: int = 1
    log_level: str = "warning"


@dataclass
class Worker:
    pod: str
    proc: subprocess.Popen
    url: str
    log: Path
    ready: bool = False
    draining: bool = False


def local_config(rendered: str, model_dir: Path | None) -> str:
    """The operator's worker.yaml, with model.path replaced by `model_dir` when given."""
    if model_dir is None:
        return rendered
    doc = yaml.safe_load(rendered)
    doc["model"]["path"] = str(model_dir)
    return yaml.safe_dump(doc, sort_keys=False)


def worker_command(config: Path, ip: str, run: LocalRun) -> list[str]:
    # `python -m`, not the console script: process.alive() matches /proc/PID/cmdline
    # against this argv, and a script's shebang would put the interpreter first.
    return [sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(config), "--host", ip,
            "--device", run.device, "--dtype", run.dtype, "--enforce-eager",
            "--cpu-kv-cache-bytes", str(run.cpu_kv_cache_bytes), "--log-level", run.log_level]


def process_name(pod: str) -> str:
    return f"worker-{pod}"


@dataclass
class PodWorkers:
    """Kubelet stand-in for one fms's pods: a worker process per Running pod."""

    kubectl: Kubectl
    namespace: str
    name: str
    state_dir: Path  # pids/ and logs/ as localcluster lays them out; worker configs beside them
    run: LocalRun = field(default_factory=LocalRun)
    bind_to_parent: bool = False  # True in tests: the workers die with pytest
    workers: dict[str, Worker] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.state_dir)

    def pods(self) -> list[dict]:
        out = self.kubectl("-n", self.namespace, "get", "pods", "-l", f"{NAME_LABEL}={self.name}", "-o", "json")
        return json.loads(out.stdout)["items"]

    def config(self, pod: str) -> tuple[Path, int]:
        """The pod's worker.yaml, written for the local run, and the API port it names."""
        cm = self.kubectl("-n", self.namespace, "get", "configmap", f"{self.name}-worker-config", "-o", "json")
        text = local_config(json.loads(cm.stdout)["data"][CONFIG_KEY], self.run.model_dir)
        path = self.state_dir / "workers" / f"{pod}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path, yaml.safe_load(text)["server"]["port"]

    async def sync(self, http: httpx.AsyncClient) -> None:
        """One pass: start workers for new Running pods, drain those of deleted pods, check readiness."""
        pods = await asyncio.to_thread(self.pods)
        alive = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
        for p in pods:
            name, ip = p["metadata"]["name"], (p.get("status") or {}).get("podIP")
            if name in alive and name not in self.workers and ip and p["status"].get("phase") == "Running":
                self.workers[name] = self.start(name, ip)
        for name, w in self.workers.items():
            if name not in alive and not w.draining:
                w.draining = True
                asyncio.get_running_loop().call_later(DRAIN_DELAY_S, w.proc.send_signal, signal.SIGTERM)
            if not w.ready and not w.draining and w.proc.poll() is None:
                try:
                    w.ready = (await http.get(f"{w.url}/ready", timeout=2)).status_code == 200
                except httpx.HTTPError:
                    pass

    def start(self, pod: str, ip: str) -> Worker:
        lay, (config, port) = self.layout, self.config(pod)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.run.threads)}
        rec = process.spawn(process_name(pod), worker_command(config, ip, self.run), lay.pids, lay.logs,
                            bind_to_parent=self.bind_to_parent, env=env)
        return Worker(pod, process.child(rec), f"http://{ip}:{port}", lay.logs / f"{process_name(pod)}.log")

    def routable(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.ready and not w.draining]

    def exited(self) -> list[Worker]:
        """Workers that ended though their pod is still there (a crash; see w.log)."""
        return [w for w in self.workers.values() if not w.draining and w.proc.poll() is not None]

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """SIGTERM the workers started here, SIGKILL after `grace_s`; returns the process names stopped."""
        return process.stop(self.layout.pids, grace_s, names={process_name(p) for p in self.workers})
