"""Start, check and stop the local control plane (the I/O edge of this package)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import commands, pki, process
from .binaries import Binaries, locate, stage_files
from .commands import Layout, Ports
from .fleet import NodeSpec, load_fleet, render_nodes

HACK = Path(__file__).resolve().parent.parent
DEFAULT_FLEET = HACK / "fleet.yaml"
# What `up` writes into the state folder; only these are wiped by a fresh start.
STATE_ENTRIES = ("pki", "logs", "pids", "etcd", "kubeconfig", "kwok.yaml", "cluster.json",
                 "kwok.kubeconfig", "controller-manager.kubeconfig", "scheduler.kubeconfig")


class ClusterError(RuntimeError):
    pass


@dataclass
class Cluster:
    """A running local cluster, as tests and scripts use it."""

    dir: Path
    server: str
    kubeconfig: Path
    kubectl_path: Path
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssl_admin(lay: Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    ctx.load_cert_chain(str(lay.pki / "admin.crt"), str(lay.pki / "admin.key"))
    return ctx


def _ssl_insecure() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with a self-signed cert of their own.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _get(url: str, ctx: ssl.SSLContext, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _create(url: str, ctx: ssl.SSLContext, obj: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10):
            pass
    except urllib.error.HTTPError as e:
        raise ClusterError(f"creating {obj['kind']} {obj['metadata']['name']}: {e.code} {e.read().decode()}") from e


def _wait(what: str, ready, timeout: float, lay: Layout, recs: list[process.Record]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [r.name for r in recs if not process.alive(r)]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see {lay.logs}/<name>.log")
        time.sleep(0.2)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}; see logs in {lay.logs}")


def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _write_configs(lay: Layout, server: str) -> None:
    pki_dir = lay.pki
    _write_yaml(lay.kubeconfig, commands.kubeconfig(server, pki_dir / "ca.crt", pki_dir / "admin.crt",
                                                    pki_dir / "admin.key"))
    for stem in ("kwok", "controller-manager", "scheduler"):
        _write_yaml(lay.component_kubeconfig(stem), commands.kubeconfig(
            server, pki_dir / "ca.crt", pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key", user=stem))
    _write_yaml(lay.kwok_config, commands.kwok_config())


def _nodes_ready(lay: Layout, server: str, names: set[str]) -> bool:
    status, body = _get(f"{server}/api/v1/nodes", _ssl_admin(lay))
    if status != 200:
        return False
    ready = {
        n["metadata"]["name"] for n in json.loads(body)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
    }
    return names <= ready


def _env(kubeconfig: Path) -> dict[str, str]:
    # The whole environment, so `subprocess.run(..., env=cluster.env)` keeps PATH and friends.
    return {**os.environ, "KUBECONFIG": str(kubeconfig)}


def handle(lay: Layout, bins: Binaries | None = None) -> Cluster:
    """The Cluster of a state folder whose `up` already ran."""
    state = json.loads(lay.state.read_text())
    bins = bins or locate()
    return Cluster(dir=lay.dir, server=state["server"], kubeconfig=lay.kubeconfig, kubectl_path=bins.kubectl,
                   env=_env(lay.kubeconfig), timings=state.get("timings", {}))


def running(lay: Layout) -> list[str]:
    return [r.name for r in process.records(lay.pids) if process.alive(r)]


def up(state_dir: Path, fleet: Path = DEFAULT_FLEET, *, bind_to_parent: bool = False,
       timeout: float = 120) -> Cluster:
    """Start a fresh control plane in `state_dir` and wait until every fleet node is Ready."""
    t0 = time.monotonic()
    lay = Layout(state_dir.resolve())
    if alive := running(lay):
        raise ClusterError(f"a cluster is already running in {lay.dir} ({', '.join(alive)}); "
                           f"stop it first: python hack/localcluster down --dir {lay.dir}")
    bins = locate()
    nodes: list[NodeSpec] = load_fleet(fleet)
    for entry in STATE_ENTRIES:
        path = lay.dir / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    lay.dir.mkdir(parents=True, exist_ok=True)

    ports = Ports(*(free_port() for _ in range(5)))
    server = commands.server_url(ports)
    pki.generate(lay.pki)
    _write_configs(lay, server)
    timings: dict[str, float] = {}

    def start(name: str, argv: list[str]) -> process.Record:
        return process.spawn(name, argv, lay.pids, lay.logs, bind_to_parent=bind_to_parent)

    try:
        recs = [start("etcd", commands.etcd_command(bins, lay, ports)),
                start("kube-apiserver", commands.apiserver_command(bins, lay, ports))]
        admin = _ssl_admin(lay)
        _wait("kube-apiserver /readyz", lambda: _get(f"{server}/readyz", admin)[0] == 200, timeout, lay, recs)
        timings["apiserver_ready_s"] = time.monotonic() - t0

        recs += [start("kube-controller-manager", commands.controller_manager_command(bins, lay, ports)),
                 start("kube-scheduler", commands.scheduler_command(bins, lay, ports)),
                 start("kwok", commands.kwok_command(bins, lay, stage_files(bins.kwok_stages)))]
        cluster = Cluster(dir=lay.dir, server=server, kubeconfig=lay.kubeconfig, kubectl_path=bins.kubectl,
                          env=_env(lay.kubeconfig))
        # Straight to the API: kubectl would first spend a second or two on discovery of a new server.
        for node in render_nodes(nodes)["items"]:
            _create(f"{server}/api/v1/nodes", admin, node)
        timings["nodes_created_s"] = time.monotonic() - t0

        insecure = _ssl_insecure()
        for name, port in (("kube-controller-manager", ports.controller_manager),
                           ("kube-scheduler", ports.scheduler)):
            _wait(f"{name} /healthz", lambda p=port: _get(f"https://127.0.0.1:{p}/healthz", insecure)[0] == 200,
                  timeout, lay, recs)
            timings[f"{name}_healthy_s"] = time.monotonic() - t0
        _wait("all fleet nodes Ready", lambda: _nodes_ready(lay, server, {n.name for n in nodes}), timeout, lay, recs)
        timings["nodes_ready_s"] = time.monotonic() - t0
        # Pods are refused until their namespace has its `default` ServiceAccount;
        # its presence in `default` shows the controller-manager is working.
        _wait("ServiceAccount default/default",
              lambda: _get(f"{server}/api/v1/namespaces/default/serviceaccounts/default", admin)[0] == 200,
              timeout, lay, recs)
    except BaseException:
        process.stop(lay.pids)
        raise
    timings["total_s"] = time.monotonic() - t0
    cluster.timings = timings
    lay.state.write_text(json.dumps({"server": server, "ports": vars(ports), "timings": timings}, indent=2))
    return cluster


def down(state_dir: Path) -> list[str]:
    return process.stop(Layout(state_dir.resolve()).pids)


def status(state_dir: Path) -> dict[str, Any]:
    lay = Layout(state_dir.resolve())
    recs = process.records(lay.pids)
    result: dict[str, Any] = {"dir": str(lay.dir), "processes": {r.name: process.alive(r) for r in recs}}
    if lay.state.exists() and recs:
        server = json.loads(lay.state.read_text())["server"]
        result["server"] = server
        result["kubeconfig"] = str(lay.kubeconfig)
        result["readyz"] = _get(f"{server}/readyz", _ssl_admin(lay))[0] == 200
    return result
