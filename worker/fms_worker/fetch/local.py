"""Sources already on the pod's filesystem (a mounted PVC or a path in the image): verify, never copy."""

from __future__ import annotations

from pathlib import Path

from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.source import ModelSource

DEFAULT_PVC_ROOT = "/mnt/pvc"


def local_dir(source: ModelSource, pvc_root: str | Path = DEFAULT_PVC_ROOT) -> Path:
    if source.scheme == "pvc":
        return Path(pvc_root) / source.location / source.path
    return Path(source.location)


def verify_local(source: ModelSource, pvc_root: str | Path = DEFAULT_PVC_ROOT) -> Path:
    d = local_dir(source, pvc_root)
    where = (f"claim {source.location!r} mounted at {Path(pvc_root) / source.location}" if source.scheme == "pvc"
             else "the image")
    if not d.is_dir():
        hint = "the path is relative to the claim's root" if source.scheme == "pvc" else "check the path"
        raise FetchError(ExitCode.NOT_FOUND, f"model {source.uri} not found: {d} is not a directory in {where}; {hint}")
    if not (d / "config.json").is_file():
        raise FetchError(ExitCode.NOT_FOUND, f"model {source.uri}: {d} has no config.json; "
                         "point the source at the directory that holds config.json and the *.safetensors files")
    if not any(d.glob("*.safetensors")):
        raise FetchError(ExitCode.NO_WEIGHTS, f"model {source.uri}: {d} has no *.safetensors files; "
                         "the worker loads safetensors only (convert pickled checkpoints first)")
    return d
