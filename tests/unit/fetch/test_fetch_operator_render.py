"""The operator's side of the fetch: the init container, the cache path, the compile cache env (pure rendering)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fms_operator.api.resource import FMS
from fms_operator.render import render_all
from fms_operator.render import fetch as op_fetch
from fms_operator.render.worker_config import worker_config
from fms_worker.config import WorkerConfig
from fms_worker.fetch import env as worker_env
from fms_worker.fetch.errors import ExitCode
from fms_worker.fetch.source import cache_dir_name, parse_source


def make_fms(spec: dict) -> FMS:
    body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}, **spec}}
    return FMS.from_body(body)


def _pod(fms) -> dict:
    deployment = next(o for o in render_all(fms) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("uri", ["hf://org/model", "hf://org/model@v1.0", "s3://bucket/a/b", "s3://bucket",
                                 "hf://Org_x/Name.With-dots@refs/pr/7", "s3://b-1/" + "deep/" * 40])
def test_operator_and_worker_agree_on_cache_names(uri):
    assert op_fetch.cache_dir_name(uri) == cache_dir_name(uri)
    parse_source(uri)  # and every URI the operator can render parses


def test_operator_and_worker_agree_on_compile_cache_env():
    assert {e["name"]: e["value"] for e in op_fetch.compile_cache_env("/c")} == worker_env.compile_cache_env("/c")


@pytest.mark.parametrize(
    "source, revision, uri, secret",
    [
        ({"hf": {"repo": "org/model"}}, None, "hf://org/model", None),
        ({"hf": {"repo": "org/model", "private": True, "tokenSecret": {"name": "hf-tok"}}}, "abc123",
         "hf://org/model@abc123", "hf-tok"),
        ({"s3": {"bucket": "models", "prefix": "llama/8b", "credentialsSecret": "s3-keys"}}, None,
         "s3://models/llama/8b", "s3-keys"),
    ],
)
def test_remote_sources_fetch_into_the_path_the_worker_loads(source, revision, uri, secret):
    model = {"source": source, **({"revision": revision} if revision else {})}
    fms = make_fms({"model": model})
    pod = _pod(fms)
    (init,) = pod["initContainers"]
    worker = pod["containers"][0]
    assert init["name"] == "fetch-model" and init["image"] == worker["image"]
    assert init["command"][:4] == ["python", "-m", "fms_worker.fetch", uri]
    config = WorkerConfig.model_validate(worker_config(fms))
    cache_arg = init["command"][init["command"].index("--cache-dir") + 1]
    assert config.model.path == f"{cache_arg}/{cache_dir_name(uri)}"
    env = {e["name"]: e for e in init["env"]}
    assert env.get("FMS_SOURCE_SECRET", {}).get("value") == secret
    if source.get("hf", {}).get("tokenSecret"):
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-tok"
    if "s3" in source:
        assert init["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]
    cache_mount = next(m for m in worker["volumeMounts"] if m["name"] == "model-cache")
    assert cache_mount in init["volumeMounts"] and cache_arg.startswith(cache_mount["mountPath"])
    assert init["terminationMessagePolicy"] == "File" and "nvidia.com/gpu" not in init["resources"]["requests"]
    # the worker's compile caches live on the volume, where WorkerConfig says
    worker_envs = {e["name"]: e.get("value") for e in worker["env"]}
    assert worker_envs == worker_envs | worker_env.compile_cache_env(config.caching.compile_cache_dir)
    assert config.caching.compile_cache_dir.startswith(cache_mount["mountPath"])


def test_compile_caches_are_per_model_and_tensor_degree():
    """Inductor tunes the worker's dynamic-shape kernels for the sizes it first compiled them at, so models of
    other widths (or shards) must not share a compile cache; replicas and restarts of one model still do."""
    def dirs(model: dict, tensor: int = 1) -> tuple[str, str]:
        fms = make_fms({"model": model, "parallelism": {"tensor": tensor}})
        worker = _pod(fms)["containers"][0]
        env = {e["name"]: e.get("value") for e in worker["env"]}
        return WorkerConfig.model_validate(worker_config(fms)).caching.compile_cache_dir, env["TORCHINDUCTOR_CACHE_DIR"]

    small, big = {"source": {"hf": {"repo": "org/small"}}}, {"source": {"hf": {"repo": "org/big"}}}
    config_dir, inductor_dir = dirs(big)
    assert inductor_dir == f"{config_dir}/inductor"  # the operator's env and the worker's config agree
    assert dirs(big) == dirs(big)
    assert len({dirs(small)[0], dirs(big)[0], dirs(big, tensor=4)[0],
                dirs({"source": {"hf": {"repo": "org/big"}}, "revision": "v2"})[0]}) == 4
    assert dirs(big)[0].startswith("/var/cache/fms/compile/")


def test_user_env_wins_over_compile_cache_default():
    fms = make_fms({"worker": {"env": [{"name": "TRITON_CACHE_DIR", "value": "/elsewhere"}]}})
    names = [e["name"] for e in _pod(fms)["containers"][0]["env"]]
    assert names.count("TRITON_CACHE_DIR") == 1 and "TORCHINDUCTOR_CACHE_DIR" in names


def _run_rendered(init: dict, tmp_path, replace: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable if a == "python" else a for a in init["command"]]
    for old, new in replace.items():
        cmd = [a.replace(old, new) for a in cmd]
    cmd = [str(tmp_path / "log") if a == "/dev/termination-log" else a for a in cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_rendered_command_verifies_an_image_path(smollm2_dir, tmp_path):
    fms = make_fms({"model": {"source": {"local": {"path": str(smollm2_dir)}}}})
    (init,) = _pod(fms)["initContainers"]
    out = _run_rendered(init, tmp_path, {"/var/cache/fms": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["path"] == str(smollm2_dir) == worker_config(fms)["model"]["path"]


def test_rendered_command_checks_a_pvc_path_and_reports_a_missing_one(smollm2_dir, tmp_path):
    fms = make_fms({"model": {"source": {"pvc": {"claimName": "weights", "path": "smollm2"}}}})
    pod = _pod(fms)
    (init,) = pod["initContainers"]
    mount = next(m for m in init["volumeMounts"] if m["name"] == "model-source")
    assert mount == {"name": "model-source", "mountPath": "/mnt/pvc/weights", "readOnly": True}
    (tmp_path / "pvc" / "weights").mkdir(parents=True)
    replace = {"/var/cache/fms": str(tmp_path / "cache"), "/mnt/pvc": str(tmp_path / "pvc")}
    missing = _run_rendered(init, tmp_path, replace)
    assert missing.returncode == ExitCode.NOT_FOUND
    assert "model pvc://weights/smollm2 not found" in (tmp_path / "log").read_text()
    (tmp_path / "pvc" / "weights" / "smollm2").symlink_to(smollm2_dir)
    assert _run_rendered(init, tmp_path, replace).returncode == 0
