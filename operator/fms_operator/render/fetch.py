"""The model fetch step: an init container that fills the cache volume before the worker starts.

The init container runs `python -m fms_worker.fetch <source>` in the worker
image with the worker's credentials. It downloads hf:// and s3:// sources into
<cache>/models/<name> (verified, resumable, one fetch per volume), and only
verifies pvc:// and image paths, so a wrong name fails here with a clear
termination message and exit code instead of a crash-looping worker. On
success its termination message is a JSON summary (cached or not, seconds, bytes).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fms_operator.api.resource import FMS

FETCH_CONTAINER = "fetch-model"
PVC_ROOT = "/mnt/pvc"  # the fetcher's default: claims appear at <root>/<claim>


def fetch_uri(fms: FMS) -> str:
    """The source as the fetcher reads it: the spec's URI, with @revision for hf sources."""
    spec = fms.spec.model
    uri = spec.source.uri()
    return f"{uri}@{spec.revision}" if spec.source.hf and spec.revision else uri


def cache_dir_name(uri: str) -> str:
    """Same function as fms_worker.fetch.source.cache_dir_name (a contract test keeps them equal).

    Duplicated because the operator does not depend on the worker package.
    """
    uri = uri.strip()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.split("://", 1)[-1]).strip("-.")[:48]
    return f"{slug}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def cached_model_path(fms: FMS, cache_dir: str) -> str:
    """Where the fetcher puts an hf:// or s3:// model on the cache volume."""
    return f"{cache_dir}/models/{cache_dir_name(fetch_uri(fms))}"


def compile_cache_env(compile_dir: str) -> list[dict[str, str]]:
    """torch.compile and Triton caches on the volume (as fms_worker.fetch.env.compile_cache_env)."""
    return [{"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{compile_dir}/inductor"},
            {"name": "TRITON_CACHE_DIR", "value": f"{compile_dir}/triton"}]


def fetch_init_container(fms: FMS, worker: dict[str, Any], cache_dir: str, compile_dir: str) -> dict[str, Any]:
    src = fms.spec.model.source
    secret = (src.hf.token_secret.name if src.hf and src.hf.token_secret else
              src.s3.credentials_secret if src.s3 else None)
    env = list(worker.get("env", []))
    if secret:
        env.append({"name": "FMS_SOURCE_SECRET", "value": secret})  # named in credential errors
    mounts = [m for m in worker["volumeMounts"] if m["name"] in ("model-cache", "tmp")]
    if src.pvc:
        mounts.append({"name": "model-source", "mountPath": f"{PVC_ROOT}/{src.pvc.claim_name}", "readOnly": True})
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": worker["image"],
        "imagePullPolicy": worker["imagePullPolicy"],
        "command": ["python", "-m", "fms_worker.fetch", fetch_uri(fms), "--cache-dir", f"{cache_dir}/models",
                    "--compile-cache-dir", compile_dir, "--pvc-root", PVC_ROOT,
                    "--termination-log", "/dev/termination-log"],
        "env": env,
        # Downloads are network- and disk-bound; requests stay small so they never decide placement.
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": worker["securityContext"],
        "volumeMounts": mounts,
    }
    if "envFrom" in worker:
        container["envFrom"] = worker["envFrom"]
    return container


def add_fetch_step(pod_spec: dict[str, Any], fms: FMS, cache_dir: str, compile_dir: str) -> None:
    """Put the fetch init container before the worker and point the worker's compile caches at the volume."""
    worker = pod_spec["containers"][0]
    user_set = {e["name"] for e in worker.get("env", [])}  # spec.worker.env wins over our defaults
    worker["env"] = worker.get("env", []) + [e for e in compile_cache_env(compile_dir) if e["name"] not in user_set]
    pod_spec["initContainers"] = [fetch_init_container(fms, worker, cache_dir, compile_dir)]
