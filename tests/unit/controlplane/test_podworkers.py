"""The pure parts of the pod-worker harness (localcluster.podworkers) and the demo's Service resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chat_demo import service_endpoints
from localcluster import process
from localcluster.podworkers import LocalRun, local_config, worker_command

RENDERED = yaml.safe_dump({"model": {"path": "/var/cache/fms/models/hf--smollm2", "source": "hf://x/y", "task": "generate"},
                           "server": {"host": "0.0.0.0", "port": 8000, "metrics_port": 9090}}, sort_keys=False)


def test_local_config_points_model_path_at_local_weights_and_keeps_the_rest():
    doc = yaml.safe_load(local_config(RENDERED, Path("/models/smollm2")))
    assert doc["model"] == {"path": "/models/smollm2", "source": "hf://x/y", "task": "generate"}
    assert doc["server"] == {"host": "0.0.0.0", "port": 8000, "metrics_port": 9090}


def test_local_config_without_model_dir_is_the_rendered_text():
    assert local_config(RENDERED, None) == RENDERED


def test_worker_command_binds_the_pod_ip_and_runs_on_cpu():
    argv = worker_command(Path("/s/workers/p.yaml"), "127.10.0.3", LocalRun(dtype="float32", cpu_kv_cache_bytes=1 << 20))
    # `python -m` so that process.alive() can match /proc/PID/cmdline (a console script would not).
    assert argv[:4] == [sys.executable, "-m", "fms_worker.cli", "serve"]
    assert "--enforce-eager" in argv  # a switch; the other flags pair up
    rest = [a for a in argv[4:] if a != "--enforce-eager"]
    assert dict(zip(rest[::2], rest[1::2])) == {
        "--config": "/s/workers/p.yaml", "--host": "127.10.0.3", "--device": "cpu", "--dtype": "float32",
        "--cpu-kv-cache-bytes": str(1 << 20), "--log-level": "warning"}


def test_stop_by_name_leaves_the_other_records_running(tmp_path):
    pids, logs = tmp_path / "pids", tmp_path / "logs"
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    process.spawn("worker-a", sleep, pids, logs)
    keep = process.spawn("cluster", [*sleep, "keep"], pids, logs)
    try:
        assert process.stop(pids, grace_s=5, names={"worker-a"}) == ["worker-a"]
        assert [r.name for r in process.records(pids)] == ["cluster"] and process.alive(keep)
    finally:
        process.stop(pids, grace_s=5)
    assert not process.alive(keep)


def _pod(name: str, ip: str | None, *, ready: bool = True, labels: dict | None = None, deleting: bool = False) -> dict:
    meta = {"name": name, "labels": labels if labels is not None else {"serving.fms.dev/name": "chat"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000},
                                               {"name": "metrics", "containerPort": 9090}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


SERVICE = {"spec": {"selector": {"serving.fms.dev/name": "chat"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                              {"name": "metrics", "port": 9090, "targetPort": 9091}]}}


@pytest.mark.parametrize("pods, port_name, expected", [
    ([_pod("a", "127.10.0.2")], "http", [("a", "127.10.0.2", 8000)]),
    ([_pod("a", "127.10.0.2")], "metrics", [("a", "127.10.0.2", 9091)]),  # a numeric targetPort as it is
    ([_pod("a", "127.10.0.2", ready=False)], "http", []),
    ([_pod("a", None)], "http", []),
    ([_pod("a", "127.10.0.2", deleting=True)], "http", []),
    ([_pod("a", "127.10.0.2", labels={"serving.fms.dev/name": "other"})], "http", []),
    ([_pod("a", "127.10.0.2"), _pod("b", "127.10.0.3")], "http", [("a", "127.10.0.2", 8000), ("b", "127.10.0.3", 8000)]),
])
def test_service_endpoints_follow_selector_readiness_and_target_port(pods, port_name, expected):
    assert service_endpoints(SERVICE, pods, port_name) == expected


def test_spawned_child_is_the_popen_to_poll(tmp_path):
    rec = process.spawn("quick", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "pids", tmp_path / "logs")
    child = process.child(rec)
    assert isinstance(child, subprocess.Popen) and child.wait(30) == 3
    process.stop(tmp_path / "pids", grace_s=1)
