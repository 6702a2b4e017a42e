"""Run the operator as a subprocess (`python -m fms_operator`) against the test cluster."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "serving.fms.dev_foundationmodelservices.yaml"
SAMPLES = REPO / "crds" / "samples"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe: Callable[[], T], timeout: float = 60, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def install_crd(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/foundationmodelservices.serving.fms.dev", "--timeout=60s")


class Operator:
    def __init__(self, proc: subprocess.Popen, log: Path, metrics_port: int) -> None:
        self.proc, self.log, self.metrics_port = proc, log, metrics_port

    def metric(self, name: str) -> float:
        """Sum of all samples of one metric (0 when absent)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@contextmanager
def running_operator(cluster, log: Path, namespaces: tuple[str, ...] = ()) -> Iterator[Operator]:
    """The operator as a process; cluster-wide unless `namespaces` are given."""
    port = free_port()
    scope = [arg for ns in namespaces for arg in ("--namespace", ns)]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fms_operator", "--metrics-port", str(port), "--liveness", "",
                                 *scope],
                                env=cluster.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    op = Operator(proc, log, port)
    try:
        wait_until("operator metrics endpoint", lambda: _reachable(op), timeout=30)
        yield op
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reachable(op: Operator) -> bool:
    if op.proc.poll() is not None:
        raise AssertionError(f"operator exited with {op.proc.returncode}:\n{op.tail()}")
    try:
        op.metric("fms_operator_reconciles_total")
        return True
    except OSError:
        return False


def get(cluster, kind: str, namespace: str, name: str) -> dict | None:
    res = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def sample(name: str, **spec_overrides) -> dict:
    doc = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    doc["spec"].update(spec_overrides)
    return doc


def apply(cluster, namespace: str, doc: dict, check: bool = True) -> subprocess.CompletedProcess:
    return cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(doc), check=check)


def condition(fms: dict | None, type_: str) -> dict:
    for c in ((fms or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}
