"""`helm install` into the local control plane; the chart's RBAC is enough to run the operator.

The operator runs as a local process (`python -m fms_operator`) with the chart's
own arguments and a kubeconfig whose only credential is a token of the chart's
ServiceAccount, so any rule missing from the ClusterRole shows up as a 403.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from localcluster.binaries import VERSIONS_FILE, bin_dir, parse_versions
from localcluster.cluster import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "fms-operator"
SAMPLES = REPO / "crds" / "samples"
CRD = "foundationmodelservices.serving.fms.dev"


def _helm_binary() -> Path:
    path = bin_dir() / f"helm-{parse_versions(VERSIONS_FILE.read_text())['HELM_VERSION']}" / "helm"
    if not path.exists():
        pytest.fail(f"helm not found at {path}; build it: bash hack/build-binaries.sh")
    return path


def _helm(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(_helm_binary()), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc


def _wait_for(what: str, check, timeout: float = 90, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _service_account_kubeconfig(cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the same API server whose user is only a token of `account`."""
    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = dict(admin["clusters"][0]["cluster"])
    ca = server.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        server["certificate-authority"] = str((cluster.kubeconfig.parent / ca).resolve())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}],
        "current-context": account,
    }))
    return path


def _operator_command(container: dict) -> list[str]:
    """The Deployment's own arguments, with its two ports moved to free local ones."""
    ports = {"--liveness": f"http://127.0.0.1:{free_port()}/healthz", "--metrics-port": str(free_port())}
    args = []
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={ports[flag]}" if flag in ports else arg)
    assert all(any(a.startswith(f + "=") for a in args) for f in ports), f"chart args changed: {container['args']}"
    return [sys.executable, "-m", "fms_operator", *args]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def release(cluster, namespace):
    name = f"fms-{uuid.uuid4().hex[:6]}"
    proc = _helm(cluster, "install", name, str(CHART), "--namespace", namespace)
    yield name, proc.stdout
    _helm(cluster, "uninstall", name, "--namespace", namespace, check=False)


def test_install_notes_and_fms_api(cluster, namespace, release):
    name, output = release
    assert "NOTES:" in output
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    # The commands NOTES.txt prints must work as printed.
    notes = output.split("NOTES:", 1)[1]
    commands = [ln.strip() for ln in notes.splitlines() if ln.strip().startswith("kubectl") and
                (" get fms" in ln or "rollout status" in ln)]
    assert len(commands) == 2, commands
    for cmd in commands:
        args = cmd.split()[1:]
        if "rollout" in args:
            args.append("--timeout=120s")
        cluster.kubectl(*args, timeout=150)  # raises with kubectl's error when a command fails


# minimal: the plain reconcile; full: two replicas (a PodDisruptionBudget) and the builtin autoscaler.
@pytest.mark.parametrize("sample", ["generate-minimal.yaml", "generate-full.yaml"])
def test_chart_rbac_is_enough_to_reconcile(cluster, namespace, release, tmp_path, sample):
    name, _ = release
    deploy = json.loads(cluster.kubectl("-n", namespace, "get", "deployment", f"{name}-fms-operator", "-o", "json").stdout)
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    kubeconfig = _service_account_kubeconfig(cluster, namespace, pod["serviceAccountName"], tmp_path / "sa.kubeconfig")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env["KUBECONFIG"] = str(kubeconfig)
    env["FMS_AUTOSCALE_INTERVAL_SECONDS"] = "1"  # several autoscaler rounds within the test
    log_path = tmp_path / "operator.log"
    with open(log_path, "w") as log:
        operator = subprocess.Popen(_operator_command(container), cwd=tmp_path, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = yaml.safe_load((SAMPLES / sample).read_text())
        fms_name = body["metadata"]["name"]
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(body))

        def deployment_exists():
            assert operator.poll() is None, f"operator exited ({operator.returncode}):\n{log_path.read_text()[-4000:]}"
            return cluster.kubectl("-n", namespace, "get", "deployment", fms_name, check=False).returncode == 0

        _wait_for(f"the operator to create deployment/{fms_name}", deployment_exists, timeout=120)

        def status_written():
            body = json.loads(cluster.kubectl("-n", namespace, "get", "fms", fms_name, "-o", "json").stdout)
            return body.get("status", {}).get("phase")

        _wait_for("the operator to write status.phase", status_written, timeout=60)
        time.sleep(5)  # let periodic work (autoscaler rounds, resyncs) hit the API a few times
        assert operator.poll() is None, f"operator exited ({operator.returncode}):\n{log_path.read_text()[-4000:]}"
        if body["spec"].get("replicas", 1) > 1:
            cluster.kubectl("-n", namespace, "get", "poddisruptionbudget", fms_name)
        if body["spec"].get("autoscaling"):
            # Every autoscaler round writes status.lastScale (with the chart's RBAC: status patch of fms).
            def autoscaler_ran():
                body = json.loads(cluster.kubectl("-n", namespace, "get", "fms", fms_name, "-o", "json").stdout)
                return body.get("status", {}).get("lastScale")

            _wait_for("the autoscaler to write status.lastScale", autoscaler_ran, timeout=30)
        cluster.kubectl("-n", namespace, "delete", "fms", fms_name, "--timeout=90s", timeout=120)
    finally:
        _stop(operator)
    log = log_path.read_text()
    # "(?<![,.])": a log timestamp's milliseconds (",403") are not a status code.
    denied = [ln for ln in log.splitlines() if re.search(r"(?<![,.\d])\b403\b|forbidden", ln, re.IGNORECASE)]
    assert not denied, "operator hit permission errors with the chart's RBAC:\n" + "\n".join(denied[:20])


def test_uninstall_leaves_no_operator_objects(cluster, namespace, release):
    name, _ = release
    _helm(cluster, "uninstall", name, "--namespace", namespace, "--wait", "--timeout=120s")
    selector = f"app.kubernetes.io/instance={name}"

    def leftovers() -> list[str]:
        left = cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout.split()
        return left + cluster.kubectl("-n", namespace, "get", "deployments,replicasets,services,serviceaccounts,pods",
                                      "-l", selector, "-o", "name").stdout.split()

    # Pods go through Terminating after their Deployment is gone; give them a moment.
    deadline = time.monotonic() + 60
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(2)
    assert left == []
    # The CRD outlives the release: deleting it would delete every user's FoundationModelService.
    cluster.kubectl("get", "crd", CRD)


def test_peering_install_runs_indexed_pods_and_cleans_up(cluster, namespace):
    name = f"fms-{uuid.uuid4().hex[:6]}"
    _helm(cluster, "install", name, str(CHART), "--namespace", namespace,
          "--set", "replicaCount=2", "--set", "peering.enabled=true")
    try:
        cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
        cluster.kubectl("get", "clusterkopfpeering", f"{name}-fms-operator")
        sts = json.loads(cluster.kubectl("-n", namespace, "get", "statefulset", f"{name}-fms-operator", "-o", "json").stdout)
        assert sts["spec"]["replicas"] == 2
        assert f"--peering={name}-fms-operator" in sts["spec"]["template"]["spec"]["containers"][0]["args"]

        # Each pod's kopf priority comes from this label; it must exist and differ between pods.
        def pod_indices():
            pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={name}",
                                              "-o", "json").stdout)["items"]
            found = sorted(p["metadata"]["labels"].get("apps.kubernetes.io/pod-index", "") for p in pods)
            return found if len(found) == 2 else None

        assert _wait_for("two operator pods", pod_indices, timeout=60) == ["0", "1"]
    finally:
        _helm(cluster, "uninstall", name, "--namespace", namespace, "--wait", check=False)
    gone = cluster.kubectl("get", "clusterkopfpeering", f"{name}-fms-operator", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
